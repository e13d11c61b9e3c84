/**
 * Import part of `npm run bench` (SPEC §9): `POST /$import`, one session, timed from the request
 * to `done` (polling GET /BulkImportStatus every 50 ms). Inputs are gzipped ndjson served over
 * local HTTP, one type per input as a bulk export writes them, a type bigger than a quarter of the
 * data cut into several inputs (Patients: 4 inputs). Raw work in the same run, as for `$load`
 * (scripts/bench/raw.ts): COPY into a staging table + one upsert per type, on one connection and on
 * two at once. The server runs with its configuration as given (FHIRHOSE_IMPORT_BATCH_LINES,
 * FHIRHOSE_IMPORT_CONCURRENCY defaults unless set in the environment of `npm run bench`).
 */
import { gzipSync } from 'node:zlib';
import { split, type DataSet } from './data.ts';
import { rawLoad } from './raw.ts';
import { trial } from './trial.ts';
import { fmt, truncate, type BenchEnv } from './common.ts';

const MB = 1_000_000;
const PATIENT_SIZES_MB = [100, 500];
const PARTS = 4;

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  print('## Import: POST /$import (one session) vs raw COPY + upsert (1 connection, and 2 at once)');
  print();
  await fetch(`${env.url}/metadata`, { headers: { authorization: env.auth } }).then((r) => r.arrayBuffer());
  for (const name of env.data) {
    if (name !== 'patients') {
      await measure(env, await env.dataSet(name, env.rows), env.rounds, name === 'small' ? 1.0 : 0.8);
      continue;
    }
    const sample = await env.dataSet('patients', 1000);
    const peaks: string[] = [];
    for (const [index, sizeMb] of PATIENT_SIZES_MB.entries()) {
      const rows = Math.min(env.rows, Math.round((sizeMb * MB) / (sample.bytes / sample.rows)));
      const peak = await measure(env, await env.dataSet('patients', rows), index === 0 ? env.rounds : 1, 0.8);
      peaks.push(`${fmt(peak.bytes / MB)} MB source: ${fmt(peak.mb)} MB`);
      if (rows === env.rows) break;
    }
    print(`Server peak RSS while importing Patients — ${peaks.join(', ')} (target: under 300 MB, flat).`);
    print();
  }
}

let session = 0;

async function measure(env: BenchEnv, data: DataSet, rounds: number, target1: number): Promise<{ bytes: number; mb: number }> {
  const { print } = env;
  const inputs: { type: string; gz: ReturnType<typeof gzipSync> }[] = [];
  for (const t of data.types) {
    const parts = Math.max(1, Math.round((PARTS * t.ndjson.length) / data.bytes));
    for (const part of split(t.ndjson, parts)) if (part.length > 0) inputs.push({ type: t.type, gz: gzipSync(part, { level: 6 }) });
  }
  const source = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: (request) => new Response(inputs[Number(/(\d+)\.ndjson\.gz$/.exec(new URL(request.url).pathname)?.[1] ?? -1)]?.gz ?? null),
  });
  const urls = inputs.map((input, i) => ({ type: input.type, url: `http://127.0.0.1:${source.port}/${input.type}.${i}.ndjson.gz` }));
  const types = data.types.map((t) => t.type);
  try {
    const gzMb = inputs.reduce((n, p) => n + p.gz.length, 0) / MB;
    print(`### ${fmt(data.rows)} resources, ${data.title}: ${fmt(data.bytes / MB)} MB of ndjson, ${inputs.length} inputs, ${fmt(gzMb, 1)} MB gzipped`);
    print();
    env.describe(data);
    print('```text');
    env.server.resetPeak();
    await trial(env, {
      op: '$import',
      rows: data.rows,
      rounds,
      reset: () => truncate(env.sql, types),
      raw1: { label: 'raw COPY + upsert, 1 connection', run: () => rawLoad(env.databaseUrl, data.types, 1) },
      raw2: { label: 'raw COPY + upsert, 2 connections', run: () => rawLoad(env.databaseUrl, data.types, 2) },
      ours: { label: `POST /$import, ${inputs.length} inputs over HTTP`, run: () => importOverHttp(env, `bench-import-${Date.now()}-${++session}`, urls, data.rows) },
      target1,
      target2: 0.9,
    });
    const mb = env.server.peakMb();
    print(`server peak RSS during these imports: ${fmt(mb)} MB`);
    print('```');
    print();
    return { bytes: data.bytes, mb };
  } finally {
    source.stop(true);
  }
}

/** Starts the session and waits for `done`; anything else is a failed benchmark. */
async function importOverHttp(env: BenchEnv, id: string, inputs: { type: string; url: string }[], rows: number): Promise<void> {
  const headers = { authorization: env.auth, 'content-type': 'application/json' };
  const res = await fetch(`${env.url}/$import`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ id, contentEncoding: 'gzip', inputs }),
  });
  if (res.status !== 201) throw new Error(`$import: HTTP ${res.status} ${await res.text()}`);
  for (;;) {
    const status = (await (await fetch(`${env.url}/BulkImportStatus/${id}`, { headers })).json()) as { status: string; imported: number; message?: string };
    if (status.status === 'done' && status.imported === rows) return;
    if (status.status !== 'active') throw new Error(`$import ${id} ended ${status.status}: ${status.message ?? JSON.stringify(status).slice(0, 500)}`);
    await Bun.sleep(50);
  }
}
