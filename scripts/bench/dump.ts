/**
 * Export half of `npm run bench` (SPEC §9): `GET /Patient/$dump` over HTTP against raw
 * `COPY (select resource from patient) TO STDOUT` through postgres.js, on the same rows of the same
 * PostgreSQL, alternating round by round so that both see the same machine load. Both sides read
 * every byte and count the lines, after one untimed warm-up round each. Then the server's peak RSS
 * at 100k and at N rows, and the Aidbox demo (100,000 hand-inserted Patients through `$dump`,
 * target under 1 s).
 */
import fs from 'node:fs';
import { connect } from '../../src/storage/db.ts';
import {
  backendCpuSeconds, cpuBetween, fillPatients, fmt, median, processCpuSeconds, rateLine, ratioLine, timed, type BenchEnv,
} from './common.ts';

const NEWLINE = 0x0a;

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  print('## Export: GET /Patient/$dump vs raw COPY');
  print();
  const small = Math.min(100_000, env.rows);
  const sizes = env.rows > small ? [small, env.rows] : [small];
  const peaks: string[] = [];
  let filled = 0;
  for (const rows of sizes) {
    const seconds = await fillPatients(env.sql, rows, { from: filled });
    filled = rows;
    const [size] = await env.sql`select pg_size_pretty(pg_total_relation_size('patient')) as size,
      (select avg(length(resource::text))::int from (select resource from patient limit 1000) s) as bytes`;
    print(`${fmt(rows)} Synthea Patients in \`patient\` (${size!.size}; ~${size!.bytes} bytes of JSON each; filled by raw COPY in ${fmt(seconds, 1)} s)`);
    print('```text');
    print(`${'rows/s per round'.padEnd(34)} ${Array.from({ length: env.rounds }, (_, i) => `round ${i + 1}`.padStart(9)).join(' ')}`);
    const raw: number[] = [];
    const ours: number[] = [];
    if (rows === sizes[0]) {
      // one untimed round each first: both sides then run JIT-compiled code (server and bench)
      expectLines((await rawCopy(env.databaseUrl)).lines, rows, 'raw COPY');
      expectLines(await dumpOverHttp(env, '/Patient/$dump'), rows, '$dump');
    }
    env.server.resetPeak();
    const cpu = { rawPg: 0, rawClient: 0, pg: 0, server: 0, client: 0 };
    for (let round = 0; round < env.rounds; round++) {
      let client = process.cpuUsage();
      raw.push(await timed(async () => {
        const result = await rawCopy(env.databaseUrl);
        expectLines(result.lines, rows, 'raw COPY');
        cpu.rawPg += result.backendCpu;
      }));
      cpu.rawClient += cpuOf(process.cpuUsage(client));
      const backends = await backendCpuSeconds(env.sql, 'fhirhose');
      const server = processCpuSeconds(env.server.pid);
      client = process.cpuUsage();
      ours.push(await timed(async () => expectLines(await dumpOverHttp(env, '/Patient/$dump'), rows, '$dump')));
      cpu.client += cpuOf(process.cpuUsage(client));
      cpu.server += processCpuSeconds(env.server.pid) - server;
      cpu.pg += cpuBetween(backends, await backendCpuSeconds(env.sql, 'fhirhose'));
    }
    const peak = env.server.peakMb();
    const perRound = (n: number) => fmt(n / env.rounds, 1);
    print(rateLine('raw COPY (select resource) → pg.js', rows, raw));
    print(rateLine('GET /Patient/$dump over HTTP', rows, ours));
    print(ratioLine('$dump / raw COPY', ours, raw, 0.9));
    print(`CPU s per round: raw — PostgreSQL ${perRound(cpu.rawPg)}, bench client ${perRound(cpu.rawClient)}; ` +
      `$dump — PostgreSQL ${perRound(cpu.pg)}, server ${perRound(cpu.server)}, bench client ${perRound(cpu.client)}`);
    if (fs.existsSync('/usr/bin/psql')) {
      const psql = await timed(() => psqlToDevNull(env.databaseUrl));
      print(rateLine('(reference) psql COPY → /dev/null', rows, [psql]));
    }
    print(`server peak RSS during these $dumps: ${fmt(env.server.peakMb(), 0)} MB`);
    print('```');
    print();
    peaks.push(`${fmt(rows)} rows: ${fmt(peak)} MB`);
  }
  print(`Server peak RSS while dumping — ${peaks.join(', ')} (target: under 300 MB, flat).`);
  print();
  await aidboxDemo(env);
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

const cpuOf = (usage: NodeJS.CpuUsage) => (usage.user + usage.system) / 1e6;

/** The baseline: raw COPY through postgres.js on a fresh connection, every byte read. */
async function rawCopy(databaseUrl: string): Promise<{ lines: number; backendCpu: number }> {
  const sql = connect(databaseUrl, { max: 1, applicationName: 'fhirhose-bench-raw' });
  try {
    const [me] = await sql`select pg_backend_pid() as pid`;
    const pid = Number(me!.pid);
    const before = processCpuSeconds(pid);
    const stream = await sql.unsafe('copy (select resource from patient) to stdout').readable();
    let lines = 0;
    for await (const chunk of stream) lines += countLines(chunk as Buffer);
    return { lines, backendCpu: processCpuSeconds(pid) - before };
  } finally {
    // a fresh connection per round: postgres.js can leave a COPY's socket paused (copy-out.ts)
    await sql.end({ timeout: 1 });
  }
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

function countLines(chunk: Uint8Array): number {
  const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  let n = 0;
  for (let i = buf.indexOf(NEWLINE); i >= 0; i = buf.indexOf(NEWLINE, i + 1)) n++;
  return n;
}

function expectLines(lines: number, rows: number, what: string): void {
  if (lines !== rows) throw new Error(`${what} gave ${lines} lines for ${rows} rows`);
}
