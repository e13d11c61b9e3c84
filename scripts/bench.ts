/**
 * `npm run bench` (SPEC §9): starts fhirhose as a child process (`bun src/main.ts`), on
 * DATABASE_URL when set, else on its own embedded PostgreSQL under ./.bench/data, and runs the
 * parts in scripts/bench/ against it and against raw COPY into the same database.
 *
 *   npm run bench -- [--rows 1000000] [--rounds 3] [--only dump,load,import,export,limits,overhead] [--data patients,mix,small]
 *                    [--data-dir DIR]...
 *
 * --rows: the big data set's size (Patients for $dump; the mix and small resources everywhere).
 * --data: the data sets (scripts/bench/data.ts); --data-dir: where the mix comes from instead of
 * tests/fixtures/synthea plus ../shared/data/synthea (any folders of FHIR ndjson or Bundles,
 * gzipped or not).
 *
 * A part is `export async function run(env: BenchEnv): Promise<void>` (see bench/common.ts).
 */
import os from 'node:os';
import { benchSql, block, fmt, ROOT_SECRET, startServer, type BenchEnv } from './bench/common.ts';
import { dataSet, DATA_SETS, histogram, type DataSet, type DataSetName } from './bench/data.ts';

type Part = () => Promise<{ run(env: BenchEnv): Promise<void> }>;

/** One line per part; the order is the order they run in. */
const PARTS: Record<string, Part> = {
  dump: () => import('./bench/dump.ts'),
  load: () => import('./bench/load.ts'),
  import: () => import('./bench/import.ts'),
  export: () => import('./bench/bulk-export.ts'),
  limits: () => import('./bench/stall.ts'),
  overhead: () => import('./bench/overhead.ts'),
};

interface Args { rows: number; rounds: number; only: string[]; data: DataSetName[]; dataDirs: string[] }

function parseArgs(argv: string[]): Args {
  const args: Args = { rows: 1_000_000, rounds: 3, only: Object.keys(PARTS), data: [...DATA_SETS], dataDirs: [] };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split('=', 2);
    const value = () => inline ?? argv[++i] ?? '';
    if (flag === '--rows') args.rows = Number(value().replaceAll('_', ''));
    else if (flag === '--rounds') args.rounds = Number(value());
    else if (flag === '--only') args.only = value().split(',').map((s) => s.trim()).filter(Boolean);
    else if (flag === '--data') args.data = value().split(',').map((s) => s.trim()).filter(Boolean) as DataSetName[];
    else if (flag === '--data-dir') args.dataDirs.push(value());
    else throw new Error(`unknown argument ${argv[i]}; use --rows N, --rounds N, --only ${Object.keys(PARTS).join(',')}, --data ${DATA_SETS.join(',')}, --data-dir DIR`);
  }
  if (!Number.isInteger(args.rows) || args.rows < 1) throw new Error('--rows must be a positive integer');
  if (!Number.isInteger(args.rounds) || args.rounds < 1) throw new Error('--rounds must be a positive integer');
  const unknown = args.only.filter((p) => !(p in PARTS));
  if (unknown.length) throw new Error(`unknown part ${unknown.join(', ')}; parts: ${Object.keys(PARTS).join(', ')}`);
  const unknownData = args.data.filter((d) => !(DATA_SETS as readonly string[]).includes(d));
  if (unknownData.length) throw new Error(`unknown data set ${unknownData.join(', ')}; data sets: ${DATA_SETS.join(', ')}`);
  return args;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const print = (line = '') => console.log(line);
  print(`# fhirhose bench — ${new Date().toISOString()}`);
  print();
  print(`\`bun scripts/bench.ts ${process.argv.slice(2).join(' ')}\` on ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}, ` +
    `${fmt(os.totalmem() / 2 ** 30, 1)} GiB RAM, Bun ${Bun.version}, ${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded PostgreSQL'}`);
  const server = await startServer({ databaseUrl: process.env.DATABASE_URL });
  const sql = benchSql(server.databaseUrl);
  try {
    const [{ version }] = (await sql`select current_setting('server_version') as version`) as unknown as [{ version: string }];
    print(`PostgreSQL ${version}; rows ${fmt(args.rows)}, rounds ${args.rounds}, data ${args.data.join(', ')}`);
    print();
    let cached: { key: string; data: Promise<DataSet> } | undefined;
    const described = new Set<string>();
    const env: BenchEnv = {
      url: server.url,
      auth: 'Basic ' + Buffer.from(`root:${ROOT_SECRET}`).toString('base64'),
      sql,
      databaseUrl: server.databaseUrl,
      rows: args.rows,
      rounds: args.rounds,
      server,
      print,
      data: args.data,
      dataSet(name, rows) {
        const key = `${name}:${rows}`;
        // one at a time: a million lines of the mix are about a gigabyte
        if (cached?.key !== key) cached = { key, data: (cached = undefined, dataSet(name, rows, args.dataDirs)) };
        return cached.data;
      },
      describe(data) {
        const key = `${data.name}:${data.rows}`;
        if (described.has(key)) return print(`(sizes per type: see the histogram of ${data.name} above)`);
        described.add(key);
        block(print, histogram(data));
      },
    };
    for (const name of args.only) await (await PARTS[name]!()).run(env);
  } finally {
    await sql.end({ timeout: 5 });
    await server.stop();
  }
}

await main();
