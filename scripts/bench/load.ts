/**
 * Load part of `npm run bench` (SPEC §9): `POST /$load` (`/<Type>/$load` for one type) of one
 * `.ndjson.gz` served over local HTTP, against, in the same run (scripts/bench/trial.ts), the raw
 * work on the same PostgreSQL: the same lines already gunzipped in memory, raw `COPY` into an
 * unlogged jsonb staging table and one set-based upsert per type, on one connection (the baseline)
 * and split over two connections at once (the two-core limit); see scripts/bench/raw.ts.
 *
 * Data sets (scripts/bench/data.ts): Patients by source size, ~100 MB (timed rounds) and ~500 MB
 * (once, for the peak-RSS target: under 300 MB, flat); the Synthea mix and small resources at
 * --rows lines. The server runs with its default configuration (no validation, `method: copy`).
 */
import { gzipSync } from 'node:zlib';
import { allLines, type DataSet } from './data.ts';
import { rawLoad } from './raw.ts';
import { trial } from './trial.ts';
import { fmt, truncate, type BenchEnv } from './common.ts';

const MB = 1_000_000;
const PATIENT_SIZES_MB = [100, 500];

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  print('## Load: POST /$load vs raw COPY + upsert (1 connection, and 2 at once)');
  print();
  // The first authenticated request verifies root's secret (argon2, once per process): not a load cost.
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
    print(`Server peak RSS while loading Patients — ${peaks.join(', ')} (target: under 300 MB, flat).`);
    print();
  }
}

async function measure(env: BenchEnv, data: DataSet, rounds: number, target1: number): Promise<{ bytes: number; mb: number }> {
  const { print } = env;
  const plain = allLines(data);
  const gz = gzipSync(plain, { level: 6 });
  const source = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response(gz) });
  const types = data.types.map((t) => t.type);
  const single = types.length === 1 ? types[0] : undefined;
  try {
    print(`### ${fmt(data.rows)} resources, ${data.title}: ${fmt(plain.length / MB)} MB of ndjson, ${fmt(gz.length / MB, 1)} MB gzipped`);
    print();
    env.describe(data);
    print('```text');
    env.server.resetPeak();
    await trial(env, {
      op: '$load',
      rows: data.rows,
      rounds,
      reset: () => truncate(env.sql, types),
      raw1: { label: 'raw COPY + upsert, 1 connection', run: () => rawLoad(env.databaseUrl, data.types, 1) },
      raw2: { label: 'raw COPY + upsert, 2 connections', run: () => rawLoad(env.databaseUrl, data.types, 2) },
      ours: {
        label: `POST /${single ? `${single}/` : ''}$load over HTTP`,
        run: () => loadOverHttp(env, `http://127.0.0.1:${source.port}/source.ndjson.gz`, single, data.rows),
      },
      target1,
      target2: 0.9,
    });
    const mb = env.server.peakMb();
    print(`server peak RSS during these loads: ${fmt(mb)} MB`);
    print('```');
    print();
    return { bytes: plain.length, mb };
  } finally {
    source.stop(true);
  }
}

async function loadOverHttp(env: BenchEnv, source: string, type: string | undefined, rows: number): Promise<void> {
  const res = await fetch(`${env.url}/${type ? `${type}/` : ''}$load`, {
    method: 'POST',
    headers: { authorization: env.auth, 'content-type': 'application/json' },
    body: JSON.stringify({ source }),
  });
  const body = (await res.json()) as Record<string, unknown>;
  const loaded = type ? body.total : Object.entries(body).reduce((n, [k, v]) => n + (/^[A-Z]/.test(k) && typeof v === 'number' ? v : 0), 0);
  if (res.status !== 200 || loaded !== rows) throw new Error(`$load: HTTP ${res.status} ${JSON.stringify(body).slice(0, 1000)}`);
}
