/**
 * Cancels never wait for the pool: on a server whose every pooled connection is held by a `$dump`,
 * all of whose clients leave at once, each COPY is cancelled and its connection comes back. (A
 * cancel sent as `select pg_cancel_backend()` needs a pooled connection itself, and a stream that
 * waits for its cancel before releasing would then wait for ever.)
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { rawGet, running, within } from './dump-helpers.ts';

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
    const idle = await within(5000, async () => (await running(server.sql, 'copy (select id, txid, ts, resource from "observation"%')).length === 0);
    expect(idle).toBeGreaterThanOrEqual(0);
    const res = await server.request('/Observation/o1');
    expect(res.status).toBe(200);
  }
}, 60_000);
