/**
 * SPEC §10 "two connection pools": bulk requests take a slot of FHIRHOSE_BULK_CONCURRENCY for as
 * long as their body streams, wait in a bounded queue, and past it get 503 + Retry-After; CRUD
 * reads go through their own pool and answer meanwhile.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { dechunk, rawGet, running } from '../operations/dump-helpers.ts';
import { within } from '../helpers/wait.ts';
import { bulkSlots } from '../../src/http/bulk-gate.ts';
import { OperationOutcomeError } from '../../src/fhir/outcome.ts';

const COPY = 'copy (select id, txid, ts, resource from "observation"%';
let server: TestServer;

async function fill(s: TestServer): Promise<void> {
  // ~30 MB: one COPY per dump, far more than the socket buffers hold, so a paused reader stalls it
  await s.sql.unsafe(`insert into observation (id, txid, status, resource)
    select 'o' || g, g, 'created', jsonb_build_object('status', 'final', 'note', jsonb_build_array(jsonb_build_object('text', repeat(md5(g::text), 100))))
    from generate_series(1, 10000) g`);
}

function dechunkOrPlain(raw: Buffer): string {
  const { body, complete } = dechunk(raw);
  return complete ? body.toString('utf8') : raw.toString('utf8');
}

/** Milliseconds a CRUD read takes; it must answer 200. */
async function timedRead(s: TestServer): Promise<number> {
  const t0 = performance.now();
  const res = await s.request('/Observation/o7');
  expect(res.status).toBe(200);
  expect(((await res.json()) as { id: string }).id).toBe('o7');
  return performance.now() - t0;
}

beforeAll(async () => {
  server = await startTestServer({
    FHIRHOSE_BULK_CONCURRENCY: '2', FHIRHOSE_BULK_QUEUE: '1', FHIRHOSE_BULK_QUEUE_WAIT_MS: '120000',
    FHIRHOSE_BULK_POOL_SIZE: '2', FHIRHOSE_POOL_SIZE: '2', FHIRHOSE_SLOW_READER_BYTES_PER_SEC: '0',
  });
  await fill(server);
}, 60_000);
afterAll(async () => { await server.stop(); }, 15_000);

describe('bulk cap', () => {
  test('past the cap and the queue a $dump gets 503 + Retry-After naming the limit; GET answers meanwhile; the queued one is served in full once a slot frees', async () => {
    const stalledGet = () => rawGet(server.url, '/Observation/$dump').then((d) => { d.socket.pause(); return d; });
    const stalled = await Promise.all([stalledGet(), stalledGet()]);
    for (const d of stalled) expect(d.status).toBe(200);
    expect(await within(20_000, async () => (await running(server.sql, COPY)).length === 2)).toBeGreaterThanOrEqual(0);

    // two more at once: one waits in the queue (no status line yet), the other is refused at once
    const more = [rawGet(server.url, '/Observation/$dump'), rawGet(server.url, '/Observation/$dump')];
    const first = await Promise.race(more.map((p, i) => p.then((r) => ({ r, i }))));
    expect(first.r.status).toBe(503);
    expect(first.r.headers['retry-after']).toBe('5');
    const refusal = dechunkOrPlain(await first.r.ended);
    const outcome = JSON.parse(refusal) as { resourceType: string; message: string; issue: { code: string }[] };
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.message).toContain('FHIRHOSE_BULK_CONCURRENCY');
    expect(outcome.message).toContain('FHIRHOSE_BULK_QUEUE');
    expect(outcome.issue[0]!.code).toBe('transient');
    const queued = more[1 - first.i]!;
    let queuedAnswered = false;
    void queued.then(() => { queuedAnswered = true; });
    // $dump-sql and $load share the cap
    const sqlRefused = await server.request('/$dump-sql', { method: 'POST', json: { query: 'select 1' } });
    expect(sqlRefused.status).toBe(503);
    // the API pool is untouched: reads answer while every bulk connection is held
    for (let i = 0; i < 5; i++) expect(await timedRead(server)).toBeLessThan(5000);
    expect(queuedAnswered).toBe(false);

    // one stalled client leaves: its slot goes to the queued request, which gets the whole table
    stalled[0]!.socket.destroy();
    const third = await queued;
    expect(third.status).toBe(200);
    const { body, complete } = dechunk(await third.ended);
    expect(complete).toBe(true);
    expect(body.toString('utf8').trim().split('\n')).toHaveLength(10000);
    stalled[1]!.socket.destroy();
    expect(await within(10_000, async () => (await running(server.sql, COPY)).length === 0)).toBeGreaterThanOrEqual(0);
    // and the cap is free again
    const after = await server.request('/Observation/$dump');
    expect(after.status).toBe(200);
    expect((await after.text()).trim().split('\n')).toHaveLength(10000);
  }, 120_000);

  test('HEAD keeps no slot nor connection: five HEADs through two slots, then a $dump is served in full', async () => {
    // Hono runs the GET route for a HEAD and drops its body unread; the gate cancels that body
    for (let i = 0; i < 5; i++) {
      const head = await server.request('/Observation/$dump', { method: 'HEAD', signal: AbortSignal.timeout(60_000) });
      expect(head.status).toBe(200);
      expect(await head.text()).toBe('');
    }
    expect(await within(10_000, async () => (await running(server.sql, COPY)).length === 0, 'the COPYs of the HEADs to stop')).toBeGreaterThanOrEqual(0);
    const dump = await server.request('/Observation/$dump', { signal: AbortSignal.timeout(60_000) });
    expect(dump.status).toBe(200);
    expect((await dump.text()).trim().split('\n')).toHaveLength(10000);
  }, 120_000);

  test('unauthenticated bulk requests never take a slot', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => server.request('/Observation/$dump', { auth: null })));
    for (const res of results) expect(res.status).toBe(401);
    const ok = await server.request('/Observation/$dump');
    expect(ok.status).toBe(200);
    await ok.text();
  });
});

describe('bulk slots', () => {
  test('a waiter gives up after the queue wait with 503 naming FHIRHOSE_BULK_QUEUE_WAIT_MS; a freed slot goes to the next waiter', async () => {
    const slots = bulkSlots({ concurrency: 1, queue: 2, queueWaitMs: 300 });
    const first = await slots.acquire();
    const late = slots.acquire();
    const err = await late.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(OperationOutcomeError);
    expect((err as OperationOutcomeError).status).toBe(503);
    expect((err as Error).message).toContain('FHIRHOSE_BULK_QUEUE_WAIT_MS');
    const next = slots.acquire();
    first();
    first(); // releasing twice frees one slot only
    const second = await next;
    expect(slots.running).toBe(1);
    second();
    expect(slots.running).toBe(0);
  });

  test('a waiter whose client left is removed from the queue', async () => {
    const slots = bulkSlots({ concurrency: 1, queue: 1, queueWaitMs: 60_000 });
    const held = await slots.acquire();
    const gone = new AbortController();
    const waiting = slots.acquire(gone.signal);
    expect(slots.waiting).toBe(1);
    gone.abort(new Error('client left'));
    expect(await waiting.then(() => 'served', (e: Error) => e.message)).toBe('client left');
    expect(slots.waiting).toBe(0);
    held();
    expect(slots.running).toBe(0);
  });
});
