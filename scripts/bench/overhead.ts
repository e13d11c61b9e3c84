/**
 * Overhead part of `npm run bench` (SPEC §14): what logging and metrics cost. Four fhirhose child
 * processes on the bench's database, alike but for:
 *
 *   quiet              FHIRHOSE_LOG=quiet, nobody scrapes (the baseline)
 *   json               FHIRHOSE_LOG=json: one JSON line per request (and per job change), to a file
 *   quiet + scrape 1 s GET /metrics every second (counters, request histogram, job and pool gauges)
 *   json + scrape 1 s  both
 *
 * Each round runs every variant once, in turn (drift hits all alike): `PUT /Patient/$load` of an
 * uploaded ndjson body of N Patients into an emptied table, then GET /Patient/<id> with 8 clients at
 * once. Medians are printed with their ratio to the baseline (1.00 = no cost; a throughput ratio
 * under 1 and a time ratio over 1 are costs). The counters themselves are always on: their cost is
 * in every variant, and the scrape adds only the reading.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fmt, median, samplePatients, startServer, timed, truncate, type BenchEnv, type ServerProcess } from './common.ts';

const VARIANTS = [
  { name: 'quiet', log: 'quiet', scrape: false },
  { name: 'json', log: 'json', scrape: false },
  { name: 'quiet + scrape 1 s', log: 'quiet', scrape: true },
  { name: 'json + scrape 1 s', log: 'json', scrape: true },
] as const;
const CLIENTS = 8;

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  const rows = Math.min(env.rows, 50_000);
  const gets = Math.min(env.rows, 20_000);
  print('## Overhead: logging and metrics');
  print();
  print(`Per round and variant: \`PUT /Patient/$load\` of ${fmt(rows)} Patients (an uploaded ndjson body, table emptied first), then ` +
    `${fmt(gets)} \`GET /Patient/<id>\` from ${CLIENTS} clients at once. ${env.rounds} rounds; medians; ratio to \`quiet\`.`);
  print();
  const body = patientLines(rows);
  const ids = Array.from({ length: rows }, (_, i) => `ovh-${i}`);
  const logDir = path.resolve(import.meta.dir, '../../.bench');
  fs.mkdirSync(logDir, { recursive: true });
  const servers: { variant: (typeof VARIANTS)[number]; server: ServerProcess; log: string }[] = [];
  try {
    for (const variant of VARIANTS) {
      const log = path.join(logDir, `overhead-${variant.log}-${servers.length}.log`);
      fs.rmSync(log, { force: true });
      const server = await startServer({ databaseUrl: env.databaseUrl, env: { FHIRHOSE_LOG: variant.log }, stdout: log });
      // the first authenticated request verifies root's secret (argon2, once per process)
      await fetch(`${server.url}/metadata`, { headers: { authorization: env.auth } }).then((r) => r.arrayBuffer());
      servers.push({ variant, server, log });
    }
    const loads = new Map<string, number[]>();
    const rates = new Map<string, number[]>();
    let scrapes = 0;
    for (let round = 0; round < env.rounds; round++) {
      for (const { variant, server } of servers) {
        let scraper: ReturnType<typeof setInterval> | undefined;
        if (variant.scrape) {
          scraper = setInterval(() => {
            void fetch(`${server.url}/metrics`, { headers: { authorization: env.auth } }).then((r) => r.text()).then(() => { scrapes++; }, () => {});
          }, 1000);
        }
        try {
          await truncate(env.sql, ['Patient']);
          const loadS = await timed(() => load(server.url, env.auth, body, rows));
          const getS = await timed(() => getMany(server.url, env.auth, ids, gets));
          loads.set(variant.name, [...(loads.get(variant.name) ?? []), loadS]);
          rates.set(variant.name, [...(rates.get(variant.name) ?? []), gets / getS]);
        } finally {
          clearInterval(scraper);
        }
      }
    }
    const baseLoad = median(loads.get('quiet')!);
    const baseRate = median(rates.get('quiet')!);
    print('```text');
    print(`${'variant'.padEnd(20)} ${'$load s'.padStart(9)} ${'ratio'.padStart(6)}   ${'GET req/s'.padStart(10)} ${'ratio'.padStart(6)}`);
    for (const { variant } of servers) {
      const l = median(loads.get(variant.name)!);
      const r = median(rates.get(variant.name)!);
      print(`${variant.name.padEnd(20)} ${fmt(l, 2).padStart(9)} ${fmt(l / baseLoad, 2).padStart(6)}   ${fmt(r).padStart(10)} ${fmt(r / baseRate, 2).padStart(6)}`);
    }
    print('```');
    print();
    const reads = servers.filter((s) => s.variant.log === 'json').map((s) => fs.readFileSync(s.log, 'utf8').split('\n').filter((l) => l.includes('"route":"/:type/:id"')).length);
    print(`Checks: each json server logged ${reads.map((n) => fmt(n)).join(' and ')} \`GET /:type/:id\` request lines ` +
      `for ${fmt(env.rounds * gets)} requests sent; ${fmt(scrapes)} scrapes answered.`);
    print();
  } finally {
    for (const { server } of servers) await server.stop();
  }
}

function patientLines(n: number): string {
  const samples = samplePatients();
  let out = '';
  for (let i = 0; i < n; i++) out += JSON.stringify({ ...samples[i % samples.length], resourceType: 'Patient', id: `ovh-${i}` }) + '\n';
  return out;
}

async function load(url: string, auth: string, body: string, rows: number): Promise<void> {
  const res = await fetch(`${url}/Patient/$load`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/fhir+ndjson' }, body });
  const answer = (await res.json()) as { total?: number };
  if (res.status !== 200 || answer.total !== rows) throw new Error(`$load: HTTP ${res.status} ${JSON.stringify(answer).slice(0, 500)}`);
}

async function getMany(url: string, auth: string, ids: string[], total: number): Promise<void> {
  let next = 0;
  const client = async () => {
    while (next < total) {
      const id = ids[(next++ * 7919) % ids.length];
      const res = await fetch(`${url}/Patient/${id}`, { headers: { authorization: auth } });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`GET /Patient/${id}: HTTP ${res.status}`);
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, client));
}
