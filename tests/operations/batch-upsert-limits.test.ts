/**
 * SPEC §10 memory of `PUT /`: a body over FHIRHOSE_BODY_LIMIT (16 MiB) is refused while it
 * arrives, a batch over FHIRHOSE_BATCH_MAX_RESOURCES before anything is written, and the largest
 * accepted batch keeps the server under 300 MB (its RSS read from /proc). Reads are served
 * meanwhile; a refused batch writes nothing.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { spawnServer, client, type Child } from '../helpers/child-server.ts';
import { sampleRss } from '../helpers/rss.ts';

let child: Child;
let sql: Sql;
let api: ReturnType<typeof client>;

beforeAll(async () => {
  const url = await freshDatabase();
  child = await spawnServer(url, await freePort(), { FHIRHOSE_LOG: 'quiet' });
  sql = connect(url, { max: 1 });
  api = client(child);
  expect((await api.request('/Patient/ordinary', { method: 'PUT', json: { resourceType: 'Patient', id: 'ordinary' } })).status).toBe(201);
}, 60_000);
afterAll(async () => {
  await sql.end();
  child.proc.kill('SIGTERM');
  await child.proc.exited;
}, 30_000);

const patients = (n: number, pad: number, prefix: string) =>
  Array.from({ length: n }, (_, i) => ({ resourceType: 'Patient', id: `${prefix}${i}`, name: [{ family: `F${i}` }], ...(pad ? { text: { status: 'generated', div: `<div>${'x'.repeat(pad)}</div>` } } : {}) }));

async function patientCount(): Promise<number> {
  const [row] = await sql`select count(*)::int as n from patient`;
  return row!.n as number;
}

async function readAnswers(): Promise<void> {
  const res = await api.request('/Patient/ordinary');
  expect(res.status).toBe(200);
  await res.text();
}

test('a 60 MB PUT / is 413 naming FHIRHOSE_BODY_LIMIT, by Content-Length or while a chunked body arrives; RSS stays low; reads go on', async () => {
  const body = JSON.stringify(patients(60_000, 900, 'big'));
  expect(body.length).toBeGreaterThan(60_000_000);
  const sampler = sampleRss(child.proc.pid);
  const declared = api.request('/', { method: 'PUT', body });
  await readAnswers();
  const res = await declared;
  expect(res.status).toBe(413);
  expect(((await res.json()) as { message: string }).message).toContain('FHIRHOSE_BODY_LIMIT');

  // no Content-Length: the body streams in 1 MB chunks and is cut at the limit
  const bytes = new TextEncoder().encode(body);
  let at = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.subarray(at, at + (1 << 20)));
      at += 1 << 20;
    },
  });
  const chunked = await api.request('/', { method: 'PUT', body: stream });
  expect(chunked.status).toBe(413);
  await readAnswers();
  expect(sampler.stop()).toBeLessThan(300);
  expect(await patientCount()).toBe(1);
}, 120_000);

test('a batch of more than FHIRHOSE_BATCH_MAX_RESOURCES small resources is 413 and writes nothing', async () => {
  const sampler = sampleRss(child.proc.pid);
  const res = await api.request('/', { method: 'PUT', json: patients(150_000, 0, 'small') });
  expect(res.status).toBe(413);
  const outcome = (await res.json()) as { message: string };
  expect(outcome.message).toContain('FHIRHOSE_BATCH_MAX_RESOURCES');
  expect(outcome.message).toContain('got 150000');
  expect(sampler.stop()).toBeLessThan(300);
  expect(await patientCount()).toBe(1);
  await readAnswers();
}, 120_000);

test('the largest accepted batch (10,000 resources, ~16 MB) is stored whole under 300 MB while reads are served', async () => {
  const batch = patients(10_000, 1450, 'ok');
  const body = JSON.stringify(batch);
  expect(body.length).toBeGreaterThan(15_000_000);
  expect(body.length).toBeLessThan(16 * 1024 * 1024);
  const sampler = sampleRss(child.proc.pid);
  const put = api.request('/', { method: 'PUT', body });
  await readAnswers();
  const res = await put;
  expect(res.status).toBe(200);
  expect(((await res.json()) as unknown[]).length).toBe(10_000);
  expect(sampler.stop()).toBeLessThan(300);
  expect(await patientCount()).toBe(10_001);
}, 180_000);
