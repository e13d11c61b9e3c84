/**
 * `$export` part of `npm run bench` (SPEC §9, §12): a system-level `$export` (gzip files), timed
 * from the kick-off to the last file downloaded, against `GET /<Type>/$dump` of the same rows and
 * against the two-core raw limit (two `COPY (select resource …)` of the halves at once), in the
 * same run, round by round in rotating order. Targets: ≥ 0.9× `$dump`, ≥ 0.9× the limit.
 *
 * The client side is as light as a client can be, so the numbers are the server's: it polls the
 * status every 50 ms (a real client follows Retry-After), downloads each file as gzip without
 * decompressing it, and checks the manifest's counts add up to the rows.
 */
import { countLines, processSeconds, rawDump, threadSeconds, fillTables } from './raw.ts';
import { rateLine } from './trial.ts';
import { fillPatients, fmt, median, timed, truncate, type BenchEnv } from './common.ts';

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  print('## $export (system level, gzip files) vs GET /<Type>/$dump and the raw two-core limit');
  print();
  for (const name of env.data) {
    if (name === 'patients') {
      await truncate(env.sql, ['Patient']);
      const seconds = await fillPatients(env.sql, env.rows);
      await env.sql`vacuum analyze patient`;
      const [size] = await env.sql`select pg_size_pretty(pg_total_relation_size('patient')) as size`;
      print(`### ${fmt(env.rows)} Synthea Patients (${size!.size}; filled by raw COPY in ${fmt(seconds, 1)} s)`);
      print();
      await compare(env, ['Patient'], env.rows);
      await truncate(env.sql, ['Patient']);
    } else {
      const data = await env.dataSet(name, env.rows);
      const types = data.types.map((t) => t.type);
      const seconds = await fillTables(env.sql, env.databaseUrl, data.types);
      print(`### ${fmt(data.rows)} resources, ${data.title}, in ${types.length} tables (filled by raw COPY + upsert in ${fmt(seconds, 1)} s)`);
      print();
      env.describe(data);
      await compare(env, types, data.rows);
      await truncate(env.sql, types);
    }
  }
}

async function compare(env: BenchEnv, types: string[], rows: number): Promise<void> {
  const { print } = env;
  const seconds = { raw2: [] as number[], dump: [] as number[], export: [] as number[] };
  const variants: [keyof typeof seconds, () => Promise<void>][] = [
    ['raw2', async () => { const r = await rawDump(env.databaseUrl, types, 2); expect(r.rows, rows, 'raw'); }],
    ['dump', async () => { let n = 0; for (const type of types) n += await dumpOverHttp(env, type); expect(n, rows, '$dump'); }],
    ['export', async () => expect(await exportOverHttp(env, types), rows, '$export')],
  ];
  // one untimed round of each (JIT warm-up), then the timed rounds in rotating order
  for (const [, fn] of variants) await fn();
  env.server.resetPeak();
  // the server's own CPU (not PostgreSQL's): less noisy than the wall time on a shared machine
  const serverCpu = { raw2: 0, dump: 0, export: 0 };
  const perThread = { raw2: new Map<string, number>(), dump: new Map<string, number>(), export: new Map<string, number>() };
  for (let round = 0; round < env.rounds; round++) {
    for (let i = 0; i < variants.length; i++) {
      const [name, fn] = variants[(round + i) % variants.length]!;
      const cpu0 = processSeconds(env.server.pid);
      const t0 = threadSeconds(env.server.pid);
      seconds[name].push(await timed(fn));
      serverCpu[name] += processSeconds(env.server.pid) - cpu0;
      for (const [thread, s] of threadSeconds(env.server.pid)) perThread[name].set(thread, (perThread[name].get(thread) ?? 0) + s - (t0.get(thread) ?? 0));
    }
  }
  const ratio = (a: number[], b: number[]) => median(a) / median(b);
  const verdict = (r: number) => `${fmt(r, 2)}× (median times; target ≥ 0.9) ${r >= 0.9 ? 'OK' : 'BELOW TARGET'}`;
  print('```text');
  print(`${'resources/s per round'.padEnd(40)} ${Array.from({ length: env.rounds }, (_, i) => `round ${i + 1}`.padStart(9)).join(' ')}`);
  print(rateLine('raw COPY → pg.js, 2 connections', rows, seconds.raw2));
  print(rateLine(`GET /<Type>/$dump × ${types.length} over HTTP`, rows, seconds.dump));
  print(rateLine('$export: kick-off → last file (gzip)', rows, seconds.export));
  print(`${'$export / $dump'.padEnd(40)} ${verdict(ratio(seconds.dump, seconds.export))}`);
  print(`${'$export / raw, 2 connections (limit)'.padEnd(40)} ${verdict(ratio(seconds.raw2, seconds.export))}`);
  print(`server CPU s per round: $dump ${fmt(serverCpu.dump / env.rounds, 2)}, $export ${fmt(serverCpu.export / env.rounds, 2)}`);
  for (const name of ['dump', 'export'] as const) {
    const top = [...perThread[name]].filter(([, s]) => s >= 0.01 * env.rounds).sort((a, b) => b[1] - a[1]);
    print(`  ${name} per thread: ${top.map(([t, s]) => `${t} ${fmt(s / env.rounds, 2)}`).join(', ')}`);
  }
  print(`server peak RSS during these rounds: ${fmt(env.server.peakMb())} MB`);
  print('```');
  print();
}

async function dumpOverHttp(env: BenchEnv, type: string): Promise<number> {
  const res = await fetch(`${env.url}/${type}/$dump`, { headers: { authorization: env.auth, 'accept-encoding': 'identity' } });
  if (res.status !== 200) throw new Error(`$dump ${type}: HTTP ${res.status} ${await res.text()}`);
  let lines = 0;
  for await (const chunk of res.body!) lines += countLines(chunk);
  return lines;
}

/** Kick-off, poll, download every file; returns the manifest's total count (checked against the rows). */
async function exportOverHttp(env: BenchEnv, types: string[]): Promise<number> {
  const headers = { authorization: env.auth, prefer: 'respond-async', accept: 'application/fhir+json' };
  const kick = await fetch(`${env.url}/$export?_type=${types.join(',')}`, { headers });
  if (kick.status !== 202) throw new Error(`$export kick-off: HTTP ${kick.status} ${await kick.text()}`);
  const status = kick.headers.get('content-location')!;
  let manifest: { output: { url: string; count: number }[] } | undefined;
  while (!manifest) {
    const res = await fetch(status, { headers: { authorization: env.auth, accept: 'application/json' } });
    if (res.status === 200) manifest = await res.json();
    else if (res.status === 202) { await res.arrayBuffer(); await Bun.sleep(50); }
    else throw new Error(`$export status: HTTP ${res.status} ${await res.text()}`);
  }
  for (const file of manifest.output) {
    const res = await fetch(file.url, { headers: { authorization: env.auth, 'accept-encoding': 'gzip' }, decompress: false } as RequestInit);
    if (res.status !== 200) throw new Error(`$export file: HTTP ${res.status}`);
    for await (const _ of res.body!) { /* bytes only: a client would store them */ }
  }
  await fetch(status, { method: 'DELETE', headers: { authorization: env.auth } }).then((r) => r.arrayBuffer());
  return manifest.output.reduce((n, f) => n + f.count, 0);
}

function expect(got: number, rows: number, what: string): void {
  if (got !== rows) throw new Error(`${what} gave ${got} resources for ${rows} rows`);
}
