/**
 * Shared helpers of `npm run bench` (SPEC §9): the fhirhose child process, its peak-RSS sampler,
 * timing, ratio printing and realistic test data.
 *
 * A bench part is a module in scripts/bench/ exporting
 *
 *     export async function run(env: BenchEnv): Promise<void>
 *
 * and registered with one line in scripts/bench.ts's PARTS. A part talks to fhirhose over HTTP
 * (`env.url`, `env.auth`) and to the same PostgreSQL directly (`env.sql`) for the raw baseline,
 * and prints with `env.print` (the output goes to BENCHMARKS.md as is).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { connect, ident, type Sql } from '../../src/storage/db.ts';
import { historyTableOf, tableOf } from '../../src/fhir/types.ts';
import type { DataSet, DataSetName } from './data.ts';

export interface BenchEnv {
  /** fhirhose base URL, e.g. http://127.0.0.1:18080 */
  url: string;
  /** `Authorization` header value for root */
  auth: string;
  /** A connection pool to fhirhose's database, for raw COPY baselines and setup. */
  sql: Sql;
  databaseUrl: string;
  /** --rows: the size of the big data set (default 1,000,000) */
  rows: number;
  /** --rounds: timed rounds per measurement (default 3) */
  rounds: number;
  server: ServerProcess;
  print(line?: string): void;
  /** --data: the data sets to run on (patients, mix, small) */
  data: DataSetName[];
  /** The data set `name` of `rows` lines (the last one built is kept for the next part). */
  dataSet(name: DataSetName, rows: number): Promise<DataSet>;
  /** Prints the data set's per-type size histogram, the first time only. */
  describe(data: DataSet): void;
}

export interface ServerProcess {
  pid: number;
  url: string;
  databaseUrl: string;
  /** Resets the kernel's peak-RSS counter (VmHWM) of the server process. */
  resetPeak(): void;
  /** Peak RSS in MB since the last reset: max of VmHWM and our own 20 ms samples of VmRSS. */
  peakMb(): number;
  stop(): Promise<void>;
}

export const ROOT_SECRET = 'bench-root-secret';
const ROOT = path.resolve(import.meta.dir, '../..');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts `bun src/main.ts` as a child: on `databaseUrl` when given, else on its own embedded
 * PostgreSQL under ./.bench/data (on a free port, so a running dev server or another bench is not disturbed).
 */
export async function startServer(options: { databaseUrl?: string; env?: Record<string, string>; stdout?: string; root?: string }): Promise<ServerProcess> {
  const port = await freePort();
  // `root`: another checkout of fhirhose to run (an A/B probe against a baseline), with its own data
  const root = options.root ?? ROOT;
  const dataDir = path.join(root, '.bench', 'data');
  const pgPort = await freePort(); // not fixed: two benches (worktrees) may run at once
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    PORT: String(port),
    HOST: '127.0.0.1',
    FHIRHOSE_LOG: process.env.FHIRHOSE_BENCH_LOG ?? 'quiet',
    FHIRHOSE_ROOT_SECRET: ROOT_SECRET,
    ...options.env,
  };
  if (options.databaseUrl) env.DATABASE_URL = options.databaseUrl;
  else Object.assign(env, { FHIRHOSE_DATA_DIR: dataDir, FHIRHOSE_PG_PORT: String(pgPort) });
  // e.g. FHIRHOSE_BENCH_BUN_FLAGS='--cpu-prof-md --cpu-prof-dir=/tmp/prof' to profile the server
  const flags = (process.env.FHIRHOSE_BENCH_BUN_FLAGS ?? '').split(' ').filter(Boolean);
  // `stdout`: a file for the server's log lines (the overhead part), else this terminal
  const stdout = options.stdout ? Bun.file(options.stdout) : 'inherit';
  const child = Bun.spawn([process.execPath, ...flags, 'src/main.ts'], { cwd: root, env, stdout, stderr: 'inherit' });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`fhirhose exited with code ${child.exitCode} during start`);
    if (await fetch(`${url}/health`).then((r) => r.ok, () => false)) break;
    if (i > 1200) throw new Error('fhirhose did not answer /health within 120 s');
    await Bun.sleep(100);
  }
  const databaseUrl = options.databaseUrl ?? embeddedUrl(dataDir, pgPort);

  let sampled = 0;
  const sampler = setInterval(() => { sampled = Math.max(sampled, statusKb(child.pid, 'VmRSS')); }, 20);
  return {
    pid: child.pid,
    url,
    databaseUrl,
    resetPeak() {
      sampled = 0;
      try { fs.writeFileSync(`/proc/${child.pid}/clear_refs`, '5'); } catch { /* not Linux, or not allowed */ }
    },
    peakMb() {
      return Math.max(sampled, statusKb(child.pid, 'VmHWM')) / 1024;
    },
    async stop() {
      clearInterval(sampler);
      child.kill('SIGTERM');
      await child.exited;
    },
  };
}

/** The URL of the embedded database (src/storage/embedded.ts keeps its password in a file). */
function embeddedUrl(dataDir: string, port: number): string {
  const password = fs.readFileSync(path.join(dataDir, 'pg-password'), 'utf8').trim();
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/fhirhose`;
}

function statusKb(pid: number, field: string): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function benchSql(databaseUrl: string): Sql {
  return connect(databaseUrl, { max: 4, applicationName: 'fhirhose-bench' });
}

/** Runs `fn` and returns its wall time in seconds. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** Sample Patients: the Synthea sample from ../shared (or /work/shared) when present, else tests/fixtures. */
export function samplePatients(): Record<string, unknown>[] {
  const candidates = [
    path.join(ROOT, '../shared/data/synthea/sample-bulk-fhir-datasets/1000-patients/Patient.000.ndjson'),
    '/work/shared/data/synthea/sample-bulk-fhir-datasets/1000-patients/Patient.000.ndjson',
    path.join(ROOT, 'tests/fixtures/synthea/Patient.000.ndjson'),
  ];
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) throw new Error('no Synthea Patient sample found');
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/**
 * Replaces the `patient` table's content with `n` Synthea Patients via raw COPY (stored shape: no
 * id/resourceType in `resource`, as the API would store them). Returns the seconds it took.
 */
export async function fillPatients(sql: Sql, n: number, options: { from?: number } = {}): Promise<number> {
  const samples = samplePatients().map((p) => {
    const { id: _id, resourceType: _type, ...rest } = p;
    return JSON.stringify(rest).replaceAll('\\', '\\\\'); // COPY text format escapes backslashes
  });
  const from = options.from ?? 0;
  return timed(async () => {
    if (from === 0) await sql`truncate patient, patient_history`;
    const stream = await sql`copy patient (id, txid, status, resource) from stdin`.writable();
    let batch: string[] = [];
    const flush = async (last: boolean) => {
      const ok = stream.write(batch.join(''));
      batch = [];
      if (!ok && !last) await new Promise((r) => stream.once('drain', r));
    };
    for (let i = from; i < n; i++) {
      batch.push(`bench-${i}\t${i + 1}\tcreated\t${samples[i % samples.length]}\n`);
      if (batch.length === 1000) await flush(false);
    }
    await flush(true);
    await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
    await sql`vacuum analyze patient`;
  });
}

/** Empties the resource tables (and their history) of `types`. */
export async function truncate(sql: Sql, types: string[]): Promise<void> {
  await sql.unsafe(`truncate ${types.flatMap((t) => [ident(tableOf(t)), ident(historyTableOf(t))]).join(', ')}`);
}

/** A `text` block for the report. */
export function block(print: (line?: string) => void, lines: string[]): void {
  print('```text');
  for (const line of lines) print(line);
  print('```');
}
