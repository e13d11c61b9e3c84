/**
 * Import part of `npm run bench` (SPEC §9): `POST /$import` of the same Synthea Patients as the
 * $load part, split over 4 gzipped inputs served over local HTTP, one session, timed from the
 * request to `done` (polling GET /BulkImportStatus every 50 ms). Baseline, in the same run and
 * alternating rounds: the same baseline as bench/load.ts (bench/raw.ts): the data gunzipped in
 * memory, raw `COPY` into an unlogged jsonb staging table and one set-based upsert into `patient`. The server runs with its
 * configuration as given (FHIRHOSE_IMPORT_BATCH_LINES, FHIRHOSE_IMPORT_CONCURRENCY defaults unless
 * set in the environment of `npm run bench`).
 */
import { gzipSync } from 'node:zlib';
import { cpuSeconds, rawLoad } from './raw.ts';
import { fmt, median, patientLines, rateLine, ratioLine, timed, type BenchEnv } from './common.ts';

const MB = 1_000_000;
const SIZES_MB = [100, 500];
const INPUTS = 4;

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  print(`## Import: POST /$import (${INPUTS} inputs, one session) vs raw COPY + upsert`);
  print();
  const sample = [...patientLines(200, 'x')];
  const lineBytes = sample.reduce((n, l) => n + l.length + 1, 0) / sample.length;
  const peaks: string[] = [];
  let session = 0;
  for (const [index, sizeMb] of SIZES_MB.entries()) {
    const rows = Math.min(env.rows, Math.round((sizeMb * MB) / lineBytes));
    const lines = [...patientLines(rows, 'import-')];
    const plain = Buffer.from(lines.join('\n') + '\n');
    const per = Math.ceil(rows / INPUTS);
    const parts = Array.from({ length: INPUTS }, (_, i) => gzipSync(lines.slice(i * per, (i + 1) * per).join('\n') + '\n', { level: 6 }));
    lines.length = 0;
    const source = Bun.serve({
      port: 0,
      hostname: '127.0.0.1',
      fetch: (request) => new Response(parts[Number(/(\d+)\.ndjson\.gz$/.exec(new URL(request.url).pathname)?.[1] ?? -1)] ?? null),
    });
    const urls = parts.map((_, i) => `http://127.0.0.1:${source.port}/Patient.${i}.ndjson.gz`);
    const rounds = index === 0 ? env.rounds : 1;
    try {
      const gzMb = parts.reduce((n, p) => n + p.length, 0) / MB;
      print(`${fmt(rows)} Synthea Patients: ${fmt(plain.length / MB)} MB of ndjson, ${INPUTS} inputs of ${fmt(gzMb / INPUTS, 1)} MB gzipped`);
      print('```text');
      print(`${'resources/s per round'.padEnd(34)} ${Array.from({ length: rounds }, (_, i) => `round ${i + 1}`.padStart(9)).join(' ')}`);
      const raw: number[] = [];
      const ours: number[] = [];
      const cpu = { raw: 0, server: 0, backends: 0 };
      env.server.resetPeak();
      for (let round = 0; round < rounds; round++) {
        await env.sql`truncate patient, patient_history`;
        let before = await cpuSeconds(env);
        raw.push(await timed(async () => { await rawLoad(env.sql, plain, rows); }));
        let after = await cpuSeconds(env);
        cpu.raw += after.bench - before.bench;
        await env.sql`truncate patient, patient_history`;
        before = await cpuSeconds(env);
        ours.push(await timed(() => importOverHttp(env, `bench-import-${Date.now()}-${++session}`, urls, rows)));
        after = await cpuSeconds(env);
        cpu.server += after.server - before.server;
        cpu.backends += after.backends - before.backends;
      }
      const peak = env.server.peakMb();
      print(rateLine('raw COPY + upsert (gunzipped)', rows, raw));
      print(rateLine(`POST /$import, ${INPUTS} inputs over HTTP`, rows, ours));
      print(ratioLine('$import / raw', ours, raw, 0.8));
      print(`CPU per round: raw COPY backend ${fmt(cpu.raw / rounds, 1)} s; $import server (Bun) ${fmt(cpu.server / rounds, 1)} s + its PostgreSQL backends ${fmt(cpu.backends / rounds, 1)} s`);
      print(`server peak RSS during these imports: ${fmt(peak)} MB (wall ${fmt(median(ours), 1)} s per import)`);
      print('```');
      print();
      peaks.push(`${fmt(plain.length / MB)} MB source: ${fmt(peak)} MB`);
    } finally {
      source.stop(true);
    }
  }
  print(`Server peak RSS while importing — ${peaks.join(', ')} (target: under 300 MB, flat).`);
  print();
}

/** Starts the session and waits for `done`; anything else is a failed benchmark. */
async function importOverHttp(env: BenchEnv, id: string, urls: string[], rows: number): Promise<void> {
  const headers = { authorization: env.auth, 'content-type': 'application/json' };
  const res = await fetch(`${env.url}/$import`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ id, contentEncoding: 'gzip', inputs: urls.map((url) => ({ type: 'Patient', url })) }),
  });
  if (res.status !== 201) throw new Error(`$import: HTTP ${res.status} ${await res.text()}`);
  for (;;) {
    const status = (await (await fetch(`${env.url}/BulkImportStatus/${id}`, { headers })).json()) as { status: string; imported: number; message?: string };
    if (status.status === 'done' && status.imported === rows) return;
    if (status.status !== 'active') throw new Error(`$import ${id} ended ${status.status}: ${status.message ?? JSON.stringify(status).slice(0, 500)}`);
    await Bun.sleep(50);
  }
}
