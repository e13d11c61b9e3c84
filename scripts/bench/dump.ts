/**
 * Export part of `npm run bench` (SPEC §9): `GET /<Type>/$dump` over HTTP against, in the same
 * run (scripts/bench/trial.ts), raw `COPY (select resource from <table>) TO STDOUT` through
 * postgres.js of the same rows, on one connection (the baseline) and as two COPYs of the table's
 * halves at once (the two-core limit); see scripts/bench/raw.ts. Every side reads every byte and
 * counts the lines, after one untimed warm-up round each.
 *
 * Patients: 100k rows, then --rows, with the server's peak RSS at each size, and the Aidbox demo
 * (100,000 hand-inserted Patients through `$dump`, target under 1 s). The Synthea mix and small
 * resources: --rows lines over their types, each type dumped in turn.
 */
import fs from 'node:fs';
import type { DataSet } from './data.ts';
import { countLines, rawDump, fillTables } from './raw.ts';
import { trial, rateLine } from './trial.ts';
import { fillPatients, fmt, median, timed, truncate, type BenchEnv } from './common.ts';

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  print('## Export: GET /<Type>/$dump vs raw COPY (1 connection, and 2 at once)');
  print();
  for (const name of env.data) {
    if (name === 'patients') await patients(env);
    else await mixed(env, await env.dataSet(name, env.rows));
  }
}

async function patients(env: BenchEnv): Promise<void> {
  const { print } = env;
  const small = Math.min(100_000, env.rows);
  const sizes = env.rows > small ? [small, env.rows] : [small];
  const peaks: string[] = [];
  let filled = 0;
  for (const rows of sizes) {
    const seconds = await fillPatients(env.sql, rows, { from: filled });
    filled = rows;
    const [size] = await env.sql`select pg_size_pretty(pg_total_relation_size('patient')) as size,
      (select avg(length(resource::text))::int from (select resource from patient limit 1000) s) as bytes`;
    print(`### ${fmt(rows)} Synthea Patients in \`patient\` (${size!.size}; ~${size!.bytes} bytes of JSON each; filled by raw COPY in ${fmt(seconds, 1)} s)`);
    print();
    print('```text');
    env.server.resetPeak();
    await trial(env, {
      op: '$dump',
      rows,
      rounds: env.rounds,
      warmup: rows === sizes[0],
      raw1: { label: 'raw COPY → pg.js, 1 connection', run: () => rawDump(env.databaseUrl, ['Patient'], 1) },
      raw2: { label: 'raw COPY → pg.js, 2 connections', run: () => rawDump(env.databaseUrl, ['Patient'], 2) },
      ours: { label: 'GET /Patient/$dump over HTTP', run: async () => expectLines(await dumpOverHttp(env, '/Patient/$dump'), rows, '$dump') },
      target1: 0.9,
      target2: 0.9,
    });
    const peak = env.server.peakMb();
    if (fs.existsSync('/usr/bin/psql')) {
      const psql = await timed(() => psqlToDevNull(env.databaseUrl));
      print(rateLine('(reference) psql COPY → /dev/null', rows, [psql]));
    }
    print(`server peak RSS during these $dumps: ${fmt(peak)} MB`);
    print('```');
    print();
    peaks.push(`${fmt(rows)} rows: ${fmt(peak)} MB`);
  }
  print(`Server peak RSS while dumping — ${peaks.join(', ')} (target: under 300 MB, flat).`);
  print();
  await aidboxDemo(env);
}

/** Every type of the data set in its table, then every table dumped in turn. */
async function mixed(env: BenchEnv, data: DataSet): Promise<void> {
  const { print } = env;
  const types = data.types.map((t) => t.type);
  const seconds = await fillTables(env.sql, env.databaseUrl, data.types);
  print(`### ${fmt(data.rows)} resources, ${data.title}, in ${types.length} tables (filled by raw COPY + upsert in ${fmt(seconds, 1)} s)`);
  print();
  env.describe(data);
  print('```text');
  env.server.resetPeak();
  await trial(env, {
    op: '$dump',
    rows: data.rows,
    rounds: env.rounds,
    warmup: true,
    raw1: { label: 'raw COPY → pg.js, 1 connection', run: () => rawDump(env.databaseUrl, types, 1) },
    raw2: { label: 'raw COPY → pg.js, 2 connections', run: () => rawDump(env.databaseUrl, types, 2) },
    ours: {
      label: `GET /<Type>/$dump × ${types.length} over HTTP`,
      run: async () => {
        let lines = 0;
        for (const type of types) lines += await dumpOverHttp(env, `/${type}/$dump`);
        expectLines(lines, data.rows, '$dump');
      },
    },
    target1: 0.9,
    target2: 0.9,
  });
  print(`server peak RSS during these $dumps: ${fmt(env.server.peakMb())} MB`);
  print('```');
  print();
  await truncate(env.sql, types);
}

/** SPEC §2's demo insert, then `$dump` of the 100,000 rows; the target is under one second. */
async function aidboxDemo(env: BenchEnv): Promise<void> {
  const { sql, print } = env;
  await sql`truncate patient, patient_history`;
  await sql.unsafe(`INSERT INTO patient (id, txid, status, resource) SELECT g.id, g.id, 'created', '{"name": [{"family": "John"}]}' FROM generate_series(1, 100000) AS g (id)`);
  await sql`vacuum analyze patient`;
  const times: number[] = [];
  for (let round = 0; round < Math.max(3, env.rounds); round++) {
    times.push(await timed(async () => expectLines(await dumpOverHttp(env, '/Patient/$dump'), 100_000, 'demo $dump')));
  }
  print('Aidbox demo: 100,000 rows from `INSERT … generate_series`, then `GET /Patient/$dump`');
  print('```text');
  print(`seconds per round: ${times.map((t) => fmt(t, 3)).join(', ')}; median ${fmt(median(times), 3)} s (target < 1 s) ${median(times) < 1 ? 'OK' : 'ABOVE TARGET'}`);
  print('```');
  print();
}

async function dumpOverHttp(env: BenchEnv, pathname: string): Promise<number> {
  const res = await fetch(env.url + pathname, { headers: { authorization: env.auth, 'accept-encoding': 'identity' } });
  if (res.status !== 200) throw new Error(`${pathname}: HTTP ${res.status} ${await res.text()}`);
  let lines = 0;
  for await (const chunk of res.body!) lines += countLines(chunk);
  return lines;
}

function psqlToDevNull(databaseUrl: string): Promise<void> {
  const child = Bun.spawn(['/usr/bin/psql', databaseUrl, '-Xqc', 'copy (select resource from patient) to stdout'], { stdout: 'ignore', stderr: 'inherit' });
  return child.exited.then((code) => { if (code !== 0) throw new Error(`psql exited with ${code}`); });
}

function expectLines(lines: number, rows: number, what: string): void {
  if (lines !== rows) throw new Error(`${what} gave ${lines} lines for ${rows} rows`);
}
