/**
 * Load half of `npm run bench` (SPEC §9): `POST /Patient/$load` of one `.ndjson.gz` of Synthea
 * Patients served over local HTTP, against the raw baseline on the same PostgreSQL in the same run:
 * the same file already gunzipped in memory, sent with raw `COPY` into an unlogged jsonb staging
 * table, then one set-based upsert into `patient`. Rounds alternate so both see the same machine
 * load. Sizes by source bytes: ~100 MB (timed rounds) and ~500 MB (once), for the peak-RSS target
 * (under 300 MB, flat). CPU seconds of the server and of its PostgreSQL backends show which side
 * limits the rate.
 */
import { gzipSync } from 'node:zlib';
import { cpuSeconds, rawLoad } from './raw.ts';
import { fmt, median, patientLines, rateLine, ratioLine, timed, type BenchEnv } from './common.ts';

const MB = 1_000_000;
const SIZES_MB = [100, 500];

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  print('## Load: POST /Patient/$load vs raw COPY + upsert');
  print();
  // The first authenticated request verifies root's secret (argon2, once per process): not a load cost.
  await fetch(`${env.url}/metadata`, { headers: { authorization: env.auth } }).then((r) => r.arrayBuffer());
  const sample = [...patientLines(200, 'x')];
  const lineBytes = sample.reduce((n, l) => n + l.length + 1, 0) / sample.length;
  const peaks: string[] = [];
  for (const [index, sizeMb] of SIZES_MB.entries()) {
    const rows = Math.min(env.rows, Math.round((sizeMb * MB) / lineBytes));
    const plain = Buffer.from([...patientLines(rows, 'load-')].join('\n') + '\n');
    const gz = gzipSync(plain, { level: 6 });
    const source = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response(gz) });
    const rounds = index === 0 ? env.rounds : 1;
    try {
      print(`${fmt(rows)} Synthea Patients: ${fmt(plain.length / MB)} MB of ndjson, ${fmt(gz.length / MB, 1)} MB gzipped`);
      print('```text');
      print(`${'resources/s per round'.padEnd(34)} ${Array.from({ length: rounds }, (_, i) => `round ${i + 1}`.padStart(9)).join(' ')}`);
      const raw: number[] = [];
      const ours: number[] = [];
      const cpu = { server: 0, backends: 0, raw: 0 };
      env.server.resetPeak();
      for (let round = 0; round < rounds; round++) {
        await env.sql`truncate patient, patient_history`;
        raw.push(await timed(async () => { cpu.raw += await rawLoad(env.sql, plain, rows); }));
        await env.sql`truncate patient, patient_history`;
        const before = await cpuSeconds(env);
        ours.push(await timed(() => loadOverHttp(env, `http://127.0.0.1:${source.port}/Patient.ndjson.gz`, rows)));
        const after = await cpuSeconds(env);
        cpu.server += after.server - before.server;
        cpu.backends += after.backends - before.backends;
      }
      const peak = env.server.peakMb();
      print(rateLine('raw COPY + upsert (gunzipped)', rows, raw));
      print(rateLine('POST /Patient/$load over HTTP', rows, ours));
      print(ratioLine('$load / raw', ours, raw, 0.8));
      print(`CPU per round: raw COPY backend ${fmt(cpu.raw / rounds, 1)} s (wall ${fmt(median(raw), 1)} s); ` +
        `$load server (Bun) ${fmt(cpu.server / rounds, 1)} s + its PostgreSQL backends ${fmt(cpu.backends / rounds, 1)} s (wall ${fmt(median(ours), 1)} s)`);
      print(`server peak RSS during these loads: ${fmt(peak)} MB`);
      print('```');
      print();
      peaks.push(`${fmt(plain.length / MB)} MB source: ${fmt(peak)} MB`);
    } finally {
      source.stop(true);
    }
  }
  print(`Server peak RSS while loading — ${peaks.join(', ')} (target: under 300 MB, flat).`);
  print();
}

async function loadOverHttp(env: BenchEnv, source: string, rows: number): Promise<void> {
  const res = await fetch(`${env.url}/Patient/$load`, {
    method: 'POST',
    headers: { authorization: env.auth, 'content-type': 'application/json' },
    body: JSON.stringify({ source }),
  });
  const body = (await res.json()) as { total?: number };
  if (res.status !== 200 || body.total !== rows) throw new Error(`$load: HTTP ${res.status} ${JSON.stringify(body)}`);
}
