/**
 * SPEC §10 "slow readers": a `$dump` or `$dump-sql` reader below FHIRHOSE_SLOW_READER_BYTES_PER_SEC
 * over FHIRHOSE_SLOW_READER_WINDOW_MS is cut, its COPY/cursor stops and its connection returns;
 * other clients are served meanwhile, in full.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import net from 'node:net';
import { startTestServer, type TestServer, basic, ROOT_SECRET } from '../helpers/server.ts';
import { dechunk, rawGet, type RawResponse } from '../operations/dump-helpers.ts';
import { within } from '../helpers/wait.ts';

const ROWS = 10_000;
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({
    FHIRHOSE_SLOW_READER_BYTES_PER_SEC: '16384', FHIRHOSE_SLOW_READER_WINDOW_MS: '2000', FHIRHOSE_BULK_POOL_SIZE: '2',
  });
  // ~30 MB, far more than the socket buffers hold
  await server.sql.unsafe(`insert into observation (id, txid, status, resource)
    select 'o' || g, g, 'created', jsonb_build_object('status', 'final', 'note', jsonb_build_array(jsonb_build_object('text', repeat(md5(g::text), 100))))
    from generate_series(1, ${ROWS}) g`);
}, 60_000);
afterAll(async () => { await server.stop(); }, 15_000);

/** Backends of this database running `like`, or idle inside its transaction (a cursor between FETCHes). */
async function holding(like: string): Promise<unknown[]> {
  return [...await server.sql`select pid from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid() and query ilike ${like} and state <> 'idle'`];
}

/** Reads the socket at about `bytesPerSec`: pauses after each chunk for as long as it "should" take. */
function trickle(socket: net.Socket, bytesPerSec: number): () => void {
  let stopped = false;
  const onData = (chunk: Buffer) => {
    socket.pause();
    setTimeout(() => { if (!stopped) socket.resume(); }, (chunk.length * 1000) / bytesPerSec);
  };
  socket.on('data', onData);
  return () => {
    stopped = true;
    socket.off('data', onData);
    socket.resume();
  };
}

async function cutWhileOthersAreServed(slow: RawResponse, like: string): Promise<void> {
  expect(slow.status).toBe(200);
  const stopTrickle = trickle(slow.socket, 1024);
  expect(await within(20_000, async () => (await holding(like)).length === 1)).toBeGreaterThanOrEqual(0);
  // while the slow reader holds its stream, an ordinary client reads a resource and a whole dump
  const read = await server.request('/Observation/o42');
  expect(read.status).toBe(200);
  const full = await server.request('/Observation/$dump');
  expect(full.status).toBe(200);
  expect((await full.text()).trim().split('\n')).toHaveLength(ROWS);
  // the slow reader is cut: its statement stops (its connection comes back) ...
  expect(await within(60_000, async () => (await holding(like)).length === 0)).toBeGreaterThanOrEqual(0);
  // ... and the body it gets, read to the end now, was cut short: no terminating chunk
  stopTrickle();
  const { complete, body } = dechunk(await slow.ended);
  expect(complete).toBe(false);
  expect(body.length).toBeLessThan(30_000_000);
}

test('a $dump reader at 1 KB/s is cut after the window; its COPY stops; a normal client is served in full meanwhile', async () => {
  const slow = await rawGet(server.url, '/Observation/$dump');
  await cutWhileOthersAreServed(slow, 'copy (select id, txid, ts, resource from "observation"%');
}, 120_000);

test('a $dump-sql reader at 1 KB/s is cut the same way; its cursor is closed', async () => {
  const { hostname, port } = new URL(server.url);
  const socket = net.connect({ host: hostname, port: Number(port) });
  const body = JSON.stringify({ query: 'select id, resource from observation', format: 'ndjson' });
  socket.write(`POST /$dump-sql HTTP/1.1\r\nhost: x\r\nauthorization: ${basic('root', ROOT_SECRET)}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  const chunks: Buffer[] = [];
  let size = 0;
  const ended = new Promise<Buffer>((resolve) => socket.on('close', () => resolve(Buffer.concat(chunks))));
  socket.on('data', (c: Buffer) => { chunks.push(c); size += c.length; });
  await within(20_000, async () => size > 0);
  const head = Buffer.concat(chunks).toString('latin1');
  const slow: RawResponse = {
    status: Number(head.split(' ')[1]), headers: {}, socket, received: () => size,
    ended: ended.then((all) => all.subarray(all.indexOf('\r\n\r\n') + 4)),
  };
  await cutWhileOthersAreServed(slow, 'fetch forward%');
}, 120_000);
