/**
 * SPEC §14 log lines, read from a real child server's stdout: FHIRHOSE_LOG=json gives one JSON
 * object per line, one per request (method, route, status, ms, client) and one per job state
 * change; secrets never appear, neither the root secret nor a wrong one nor Authorization headers.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, freshDatabase } from './helpers/database.ts';
import { spawnServer, type Child } from './helpers/child-server.ts';
import { basic, ROOT_SECRET } from './helpers/server.ts';
import { startSourceServer, type SourceServer } from './helpers/import-sources.ts';
import { createLogger } from '../src/logging.ts';

const WRONG = 'wrong-secret-that-must-never-be-logged';
let child: Child;
let sources: SourceServer;

beforeAll(async () => {
  sources = startSourceServer();
  child = await spawnServer(await freshDatabase(), await freePort(), { FHIRHOSE_LOG: 'json' });
});
afterAll(async () => {
  child?.proc.kill('SIGTERM');
  await child?.proc.exited;
  await sources?.stop();
});

function jsonLines(): Record<string, unknown>[] {
  const lines = child.output().split('\n').filter((l) => l.startsWith('{'));
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function until<T>(find: () => T | undefined, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no ${what} in the log within ${timeoutMs} ms:\n${child.output().slice(-3000)}`);
    await Bun.sleep(20);
  }
}

test('every stdout line of FHIRHOSE_LOG=json is a JSON object with time and level', async () => {
  await until(() => (child.output().includes('listening') ? true : undefined), 'listening line');
  const lines = child.output().split('\n').filter((l) => l.trim() !== '');
  expect(lines.length).toBeGreaterThan(0);
  for (const line of lines) {
    const parsed = JSON.parse(line) as Record<string, unknown>;
    expect(typeof parsed.time).toBe('string');
    expect(parsed.level).toBe('info');
  }
});

test('one request line per request: method, route pattern, status, ms, client; ids and secrets stay out', async () => {
  const auth = basic('root', ROOT_SECRET);
  expect((await fetch(`${child.url}/Patient/secret-looking-id?token=abc`, { headers: { authorization: auth } })).status).toBe(404);
  expect((await fetch(`${child.url}/Patient`, { headers: { authorization: basic('root', WRONG) } })).status).toBe(401);
  const found = await until(() => {
    const requests = jsonLines().filter((l) => l.event === 'request' && l.route === '/:type/:id' && l.status === 404);
    const refused = jsonLines().filter((l) => l.event === 'request' && l.route === '/:type' && l.status === 401);
    return requests.length === 1 && refused.length === 1 ? { ok: requests[0]!, refused: refused[0]! } : undefined;
  }, 'request lines');
  expect(found.ok).toMatchObject({ method: 'GET', route: '/:type/:id', status: 404, client: 'root', addr: '127.0.0.1' });
  expect(typeof found.ok.ms).toBe('number');
  expect(found.refused).toMatchObject({ method: 'GET', status: 401, client: null });
  const out = child.output();
  for (const secret of [ROOT_SECRET, WRONG, auth.slice(6), basic('root', WRONG).slice(6), 'secret-looking-id', 'token=abc']) expect(out).not.toContain(secret);
});

test('an $import logs its job state changes: claimed then done, with kind and key, never the source URL', async () => {
  const text = fs.readFileSync(path.join(import.meta.dir, 'fixtures/synthea/Patient.000.ndjson'));
  sources.set('/private/Patient.ndjson', text);
  const res = await fetch(`${child.url}/$import`, {
    method: 'POST',
    headers: { authorization: basic('root', ROOT_SECRET), 'content-type': 'application/json' },
    body: JSON.stringify({ id: 'logged', inputs: [{ resourceType: 'Patient', url: sources.url('/private/Patient.ndjson') }] }),
  });
  expect(res.status).toBe(201);
  const states = await until(() => {
    const jobs = jsonLines().filter((l) => l.event === 'job' && l.kind === 'import-input');
    return jobs.some((j) => j.state === 'done') ? jobs.map((j) => j.state) : undefined;
  }, 'job done line');
  expect(states[0]).toBe('claimed');
  expect(states.at(-1)).toBe('done');
  expect(child.output()).not.toContain('/private/Patient.ndjson');
});

test('FHIRHOSE_LOG=info writes the same events as text; quiet writes nothing', () => {
  const written: string[] = [];
  createLogger({ log: 'info' }, (l) => written.push(l)).event({ event: 'request', method: 'GET', route: '/:type', status: 200, client: null });
  expect(written).toHaveLength(1);
  expect(written[0]).toMatch(/^\d{4}-\d\d-\d\dT\S+Z request method=GET route=\/:type status=200$/);
  createLogger({ log: 'quiet' }, (l) => written.push(l)).event({ event: 'request' });
  createLogger({ log: 'quiet' }, (l) => written.push(l))('a line');
  expect(written).toHaveLength(1);
});
