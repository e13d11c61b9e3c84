/**
 * Cancels never wait for the pool: on a server whose every pooled connection is held by a `$dump`,
 * all of whose clients leave at once, each COPY is cancelled and its connection comes back. (A
 * cancel sent as `select pg_cancel_backend()` needs a pooled connection itself, and a stream that
 * waits for its cancel before releasing would then wait for ever.)
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { rawGet, running } from './dump-helpers.ts';
import { within } from '../helpers/wait.ts';

const POOL = 3;
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_POOL_SIZE: String(POOL) });
  // ~6 MB: under the split threshold (one COPY per dump), far over what the socket buffers hold
  await server.sql.unsafe(`insert into observation (id, txid, status, resource)
    select 'o' || g, g, 'created', jsonb_build_object('status', 'final', 'note', jsonb_build_array(jsonb_build_object('text', repeat(md5(g::text), 100))))
    from generate_series(1, 2000) g`);
}, 60_000);
afterAll(async () => { await server.stop(); }, 15_000);

test('as many dumps as the pool has connections, left all at once: every connection comes back', async () => {
  for (let round = 0; round < 3; round++) {
    const dumps = await Promise.all(Array.from({ length: POOL }, () => rawGet(server.url, '/Observation/$dump')));
    for (const d of dumps) d.socket.pause();
    for (const d of dumps) d.socket.destroy();
    await within(30_000, async () => (await running(server.sql, 'copy (select id, txid, ts, resource from "observation"%')).length === 0, `every COPY of round ${round} ended`);
    const res = await server.request('/Observation/o1');
    expect(res.status).toBe(200);
  }
}, 120_000);
