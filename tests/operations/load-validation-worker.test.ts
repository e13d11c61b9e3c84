/**
 * The first `validation: on` `$load` of a fresh server compiles the FHIR R4 schema (2–5 s of
 * CPU). That happens in a worker thread (operations/struct-check.ts), so the same server keeps
 * answering other clients meanwhile: every `GET /Patient/x` during the load is answered in a small
 * part of the load's time, most within a few ms (on the event loop, one of them waited out the
 * whole compile). The server is a child process, so the schema is compiled for the first time in it.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { spawnServer, type Child } from '../helpers/child-server.ts';
import { patients, startSourceServer, type SourceServer } from '../helpers/import-sources.ts';
import { basic, ROOT_SECRET } from '../helpers/server.ts';

const AUTH = { authorization: basic('root', ROOT_SECRET), 'content-type': 'application/json' };
// Measured on the shared 2-core machine at load average 13–16 (eight test suites at once): median
// 0–4 ms; the slowest GET was a scheduling hiccup at a random moment, 50–1210 ms, in loads of
// 5.6–16 s. With the compile on the event loop, one GET waited 8.3 s of a 9.1 s load. So the
// slowest GET must stay under a quarter of the load's time (or 300 ms on a quick load): a blocked
// event loop fails that by far, a busy machine does not.
const SHARE_OF_LOAD = 0.25;
const FLOOR_MS = 300;
const MEDIAN_MS = 100;

let child: Child;
let sources: SourceServer;
beforeAll(async () => {
  child = await spawnServer(await freshDatabase(), await freePort());
  sources = startSourceServer();
  sources.set('/patients.ndjson', patients(3000, 'v'));
  sources.set('/bad.ndjson', `${JSON.stringify({ resourceType: 'Patient', id: 'bad', active: 'yes' })}\n`);
}, 60_000);
afterAll(async () => {
  child.proc.kill('SIGTERM');
  await child.proc.exited;
  await sources.stop();
});

test('while the first validation: on $load compiles the schema, every GET is answered at once', async () => {
  const put = await fetch(`${child.url}/Patient/x`, { method: 'PUT', headers: AUTH, body: JSON.stringify({ resourceType: 'Patient', id: 'x' }) });
  expect(put.status).toBe(201);

  let finished = false;
  const began = performance.now();
  const loading = fetch(`${child.url}/Patient/$load`, {
    method: 'POST', headers: AUTH,
    body: JSON.stringify({ source: sources.url('/patients.ndjson'), validation: { enable: 'on', checks: 'struct' } }),
  }).finally(() => { finished = true; });

  const latencies: number[] = [];
  while (!finished) {
    const started = performance.now();
    const res = await fetch(`${child.url}/Patient/x`, { headers: AUTH });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { id: string }).id).toBe('x');
    latencies.push(performance.now() - started);
  }
  const load = await loading;
  const loadMs = performance.now() - began;
  expect({ status: load.status, body: await load.json() }).toEqual({ status: 200, body: { total: 3000 } });
  // The load lasted long enough to be watched (the compile alone is seconds), and no GET waited for it.
  expect(latencies.length).toBeGreaterThan(10);
  const sorted = [...latencies].sort((a, b) => a - b);
  expect(sorted[Math.floor(sorted.length / 2)]!).toBeLessThan(MEDIAN_MS);
  expect(sorted.at(-1)!).toBeLessThan(Math.max(FLOOR_MS, SHARE_OF_LOAD * loadMs));
}, 90_000);

test('the worker still rejects an invalid resource with its path and value', async () => {
  const res = await fetch(`${child.url}/Patient/$load`, {
    method: 'POST', headers: AUTH,
    body: JSON.stringify({ source: sources.url('/bad.ndjson'), validation: { enable: 'on', checks: 'struct' } }),
  });
  const body = await res.json() as Record<string, unknown>;
  expect(JSON.stringify(body)).toContain('Patient.active: \\"yes\\" is not a boolean');
});
