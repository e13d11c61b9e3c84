/**
 * GET /<Type>/$dump as a stream (SPEC §5): backpressure from a slow client, a client that
 * disconnects, a database failure mid-stream. Real sockets, real chunked responses.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { dechunk, rawGet, running } from './dump-helpers.ts';
import { within } from '../helpers/wait.ts';

let server: TestServer;
const ROWS = 800;
const COPY = 'copy (select id, txid, ts, resource from "observation"%';
const ids = (body: Buffer) => body.toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).id as string);

beforeAll(async () => {
  server = await startTestServer();
  // ~100 KB per line, 80 MB in all: far more than every buffer between PostgreSQL and the client
  // (socket buffers, postgres.js's 1 MiB, Bun's), so a server that ignored backpressure would
  // finish the COPY while the client is not reading.
  await server.sql.unsafe(`insert into observation (id, txid, status, resource)
    select 'o' || g, g, 'created', jsonb_build_object('status', 'final', 'note', jsonb_build_array(jsonb_build_object('text', repeat(md5(g::text), 3200))))
    from generate_series(1, ${ROWS}) g`);
}, 60_000);
// postgres.js's end() waits its full 5 s for a connection killed mid-query (it keeps the query)
afterAll(async () => { await server.stop(); }, 15_000);

async function poolServes(): Promise<void> {
  const res = await server.request('/Observation/o7');
  expect(res.status).toBe(200);
  expect((await res.json()).id).toBe('o7');
}

test('a client that stops reading holds the COPY in ClientWrite, and then still gets every line', async () => {
  const res = await rawGet(server.url, '/Observation/$dump');
  expect(res.status).toBe(200);
  res.socket.pause();
  // the buffers between PostgreSQL and the paused client fill, then the COPY waits for the client
  await within(30_000, async () => (await running(server.sql, COPY)).some((c) => c.wait_event === 'ClientWrite'), 'the COPY waiting in ClientWrite');
  expect(await running(server.sql, COPY)).toHaveLength(1);
  expect(res.received()).toBeLessThan(40 * 1024 * 1024); // of ~80 MB
  res.socket.resume();
  const { body, complete } = dechunk(await res.ended);
  expect(complete).toBe(true);
  const lines = body.toString('utf8').split('\n').filter(Boolean);
  expect(lines.length).toBe(ROWS);
  expect(JSON.parse(lines[0]!).resourceType).toBe('Observation');
}, 60_000);

test('a client that disconnects ends the COPY and its connection returns to the pool', async () => {
  // more disconnects than the pool has connections (12): a leaked connection would show
  for (let i = 0; i < 14; i++) {
    const res = await rawGet(server.url, '/Observation/$dump');
    expect(res.status).toBe(200);
    await within(30_000, () => res.received() >= 512 * 1024, 'the first 512 KB of the dump');
    res.socket.destroy();
    // without the cancel the COPY would wait in ClientWrite for ever: any bound tells them apart
    await within(10_000, async () => (await running(server.sql, COPY)).length === 0, `the COPY of disconnected client ${i} ended`);
  }
  await poolServes();
  const full = await rawGet(server.url, '/Observation/$dump');
  const { body, complete } = dechunk(await full.ended);
  expect(complete).toBe(true);
  expect(body.toString('utf8').split('\n').filter(Boolean).length).toBe(ROWS);
}, 120_000);

test('a database failure mid-stream makes the client read reject: the body never ends cleanly', async () => {
  const res = await server.request('/Observation/$dump', { headers: { 'accept-encoding': 'identity' } });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  let received = 0;
  while (received < 1024 * 1024) received += (await reader.read()).value?.length ?? 0;
  const [copy] = await running(server.sql, COPY);
  expect(copy).toBeDefined();
  await server.sql`select pg_terminate_backend(${copy!.pid})`;
  const drain = async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return received;
      received += value.length;
    }
  };
  await expect(drain()).rejects.toThrow();
  await poolServes();
});

test('the same failure seen on the wire: the terminating zero-size chunk never comes', async () => {
  const res = await rawGet(server.url, '/Observation/$dump');
  await within(30_000, () => res.received() >= 1024 * 1024, 'the first MB of the dump');
  res.socket.pause();
  const [copy] = await running(server.sql, COPY);
  await server.sql`select pg_terminate_backend(${copy!.pid})`;
  res.socket.resume();
  const { body, complete } = dechunk(await res.ended);
  expect(complete).toBe(false);
  expect(body.toString('utf8').split('\n').filter(Boolean).length).toBeLessThan(ROWS);
  await poolServes();
});

describe('a table of 8 MB or more, read by two COPYs over halves of its pages', () => {
  const BIG = 40_000;
  const SPLIT = 'copy (select id, txid, ts, resource from "encounter" where ctid%';
  beforeAll(async () => {
    // ~1.5 KB per row, under the TOAST threshold: ~70 MB in the table itself, more than the
    // buffers between the two COPYs and a client that stopped reading can hold
    await server.sql.unsafe(`insert into encounter (id, txid, status, resource)
      select 'e' || g, g, 'created', jsonb_build_object('status', 'finished', 'text', repeat(md5(g::text), 47)) from generate_series(1, ${BIG}) g`);
    const [size] = await server.sql`select pg_relation_size('encounter') as bytes`;
    expect(Number(size!.bytes)).toBeGreaterThan(50 << 20);
  }, 60_000);

  test('a disconnect ends both COPYs and a failure of one half aborts the response and ends the other', async () => {
    const gone = await rawGet(server.url, '/Encounter/$dump');
    await within(30_000, () => gone.received() >= 256 * 1024, 'the first 256 KB of the dump');
    gone.socket.destroy();
    await within(10_000, async () => (await running(server.sql, SPLIT)).length === 0, 'both COPYs of the disconnected client ended');

    const res = await rawGet(server.url, '/Encounter/$dump');
    res.socket.pause();
    expect(res.status).toBe(200);
    const halves = await running(server.sql, SPLIT);
    expect(halves.length).toBe(2);
    await server.sql`select pg_terminate_backend(${halves[0]!.pid})`;
    res.socket.resume();
    expect(dechunk(await res.ended).complete).toBe(false);
    await within(10_000, async () => (await running(server.sql, SPLIT)).length === 0, 'the other half ended');
    await poolServes();
    expect(ids(dechunk(await (await rawGet(server.url, '/Encounter/$dump')).ended).body).length).toBe(BIG);
  }, 90_000);

  test('both halves run at once and every row comes out exactly once, even while rows are rewritten (last: it doubles the table)', async () => {
    const res = await rawGet(server.url, '/Encounter/$dump');
    expect(res.status).toBe(200);
    res.socket.pause();
    const halves = await running(server.sql, SPLIT);
    expect(halves.length).toBe(2);
    // Every row gets a new version at the end of the table, i.e. in the second half's pages. Both
    // COPYs started before this, so they see the old versions; the exported snapshot makes that
    // hold also for writes between the two COPY starts, a window too short to hit from a test.
    await server.sql`update encounter set txid = txid + 1000000`;
    res.socket.resume();
    const { body, complete } = dechunk(await res.ended);
    expect(complete).toBe(true);
    const seen = ids(body);
    expect(seen.length).toBe(BIG);
    expect(new Set(seen).size).toBe(BIG);
    // the versions of the dump's snapshot only (the update gave every row txid + 1,000,000)
    const stale = body.toString('utf8').split('\n').filter(Boolean).filter((l) => JSON.parse(l).meta.versionId !== JSON.parse(l).id.slice(1));
    expect(stale.length).toBe(0);
  }, 90_000);
});

describe('clients that leave a split dump at any moment, even as its COPYs end by themselves', () => {
  const ROWS_SMALL = 6_000;
  beforeAll(async () => {
    // ~1.5 KB per row: just over the 8 MB split threshold, so both COPYs can end on their own
    // while a cancel for them is on its way (the race that left a pooled connection aborted)
    await server.sql.unsafe(`insert into condition (id, txid, status, resource)
      select 'c' || g, g, 'created', jsonb_build_object('clinicalStatus', jsonb_build_object('text', repeat(md5(g::text), 47))) from generate_series(1, ${ROWS_SMALL}) g`);
    const [size] = await server.sql`select pg_relation_size('condition') as bytes`;
    expect(Number(size!.bytes)).toBeGreaterThan(8 << 20);
  }, 60_000);

  test('leave every connection of the pool usable: none idle in a transaction, every query answers', async () => {
    const total = (await server.sql`select count(*)::int as n from condition`)[0]!.n as number;
    for (let i = 0; i < 30; i++) {
      const res = await rawGet(server.url, '/Condition/$dump');
      expect(res.status).toBe(200);
      // from the first bytes to nearly all of them (~9.5 MB of lines)
      const at = (i % 10) * 1024 * 1024;
      await within(30_000, () => res.received() >= at || res.socket.destroyed || res.socket.readableEnded, `${at} bytes of dump ${i}`);
      res.socket.destroy();
    }
    await within(30_000, async () => {
      const [row] = await server.sql`select count(*)::int as n from pg_stat_activity
        where datname = current_database() and state like 'idle in transaction%'`;
      return row!.n === 0;
    }, 'no connection idle in a transaction');
    // more requests at once than the pool has connections: each of them gets one in turn
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => server.request(`/Condition/c${i + 1}`)));
    expect(answers.map((r) => r.status)).toEqual(answers.map(() => 200));
    const full = await rawGet(server.url, '/Condition/$dump');
    expect(ids(dechunk(await full.ended).body).length).toBe(total);
  }, 120_000);
});
