/**
 * SPEC §10 on `$export` file downloads: like `$dump`, a download takes a slot of the bulk cap
 * (503 + Retry-After past it) and a reader slower than FHIRHOSE_SLOW_READER_BYTES_PER_SEC is cut,
 * while ordinary clients are served meanwhile, in full.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import net from 'node:net';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { dechunk, rawGet } from '../operations/dump-helpers.ts';
import { kickOff, waitForManifest } from '../helpers/export.ts';
import { within } from '../helpers/wait.ts';

const ROWS = 10_000;

/** ~30 MB of plain ndjson (it gzips to little: the downloads below ask for identity). */
async function fill(server: TestServer): Promise<void> {
  await server.sql.unsafe(`insert into observation (id, txid, status, resource)
    select 'o' || g, g, 'created', jsonb_build_object('resourceType', 'Observation', 'id', 'o' || g, 'status', 'final',
      'note', jsonb_build_array(jsonb_build_object('text', repeat(md5(g::text), 100))))
    from generate_series(1, ${ROWS}) g`);
}

/** The path of the one Observation file of a fresh export. */
async function exportedFile(server: TestServer): Promise<string> {
  const manifest = await waitForManifest(server, await kickOff(server, '/$export?_type=Observation'), { timeoutMs: 120_000 });
  expect(manifest.output).toHaveLength(1);
  expect(manifest.output[0]!.count).toBe(ROWS);
  return new URL(manifest.output[0]!.url).pathname;
}

/** Reads the socket at about `bytesPerSec` until the returned function is called. */
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

async function fullDownload(server: TestServer, file: string): Promise<void> {
  const res = await server.request(file, { headers: { 'accept-encoding': 'identity' } });
  expect(res.status).toBe(200);
  const lines = (await res.text()).split('\n').filter(Boolean);
  expect(lines).toHaveLength(ROWS);
  expect(new Set(lines.map((l) => JSON.parse(l).id)).size).toBe(ROWS);
}

describe('a slow $export downloader', () => {
  let server: TestServer;
  let file: string;
  const log: string[] = [];
  beforeAll(async () => {
    server = await startTestServer({ FHIRHOSE_SLOW_READER_BYTES_PER_SEC: '16384', FHIRHOSE_SLOW_READER_WINDOW_MS: '2000' }, { log: (l) => log.push(l) });
    await fill(server);
    file = await exportedFile(server);
  }, 180_000);
  afterAll(async () => { await server.stop(); }, 15_000);

  test('at 1 KB/s is cut after the window, while an ordinary client downloads the same file in full', async () => {
    const slow = await rawGet(server.url, file);
    expect(slow.status).toBe(200);
    const stopTrickle = trickle(slow.socket, 1024);
    // meanwhile: a CRUD read and a whole download of the same file
    const read = await server.request('/Observation/o42');
    expect(read.status).toBe(200);
    await fullDownload(server, file);
    // the slow one is cut by the server ...
    await within(60_000, () => log.some((l) => l.includes(`GET ${file}`) && l.includes('the response was cut')), 'the cut of the slow download');
    // ... mid-body: read to the end now, it has no terminating chunk and far less than the file
    stopTrickle();
    const { body, complete } = dechunk(await slow.ended);
    expect(complete).toBe(false);
    expect(body.length).toBeLessThan(20_000_000);
    // and it can resume with Range from where it stopped: the two parts are the whole file
    const rest = await server.request(file, { headers: { 'accept-encoding': 'identity', range: `bytes=${body.length}-` } });
    expect(rest.status).toBe(206);
    const size = Number(rest.headers.get('content-range')!.split('/')[1]);
    expect(size).toBeGreaterThan(20_000_000);
    const whole = Buffer.concat([body, Buffer.from(await rest.arrayBuffer())]).toString().split('\n').filter(Boolean);
    expect(whole).toHaveLength(ROWS);
    expect(whole.every((l) => JSON.parse(l).resourceType === 'Observation')).toBe(true);
  }, 120_000);
});

describe('$export downloads under the bulk cap', () => {
  let server: TestServer;
  let file: string;
  beforeAll(async () => {
    // one slot, no queue; the slow-reader window is long, so only the client ends its download
    server = await startTestServer({ FHIRHOSE_BULK_CONCURRENCY: '1', FHIRHOSE_BULK_QUEUE: '0', FHIRHOSE_SLOW_READER_WINDOW_MS: '600000' });
    await fill(server);
    file = await exportedFile(server);
  }, 180_000);
  afterAll(async () => { await server.stop(); }, 15_000);

  test('a download held open takes the slot: the next one gets 503 + Retry-After, reads are served; the slot returns when it leaves', async () => {
    const held = await rawGet(server.url, file);
    expect(held.status).toBe(200);
    held.socket.pause();
    const refused = await server.request(file, { headers: { 'accept-encoding': 'identity' } });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('5');
    expect((await refused.json()).issue[0].diagnostics).toContain('FHIRHOSE_BULK_CONCURRENCY');
    const read = await server.request('/Observation/o42');
    expect(read.status).toBe(200);
    // the status URL and kick-off are not bulk requests: they still answer
    expect((await server.request('/$export?_type=Patient', { headers: { prefer: 'respond-async' } })).status).toBe(202);
    held.socket.destroy();
    await within(30_000, async () => {
      const res = await server.request(file, { headers: { 'accept-encoding': 'gzip' } });
      if (res.status === 503) return false;
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      return true;
    }, 'a download after the held one left');
    await fullDownload(server, file);
  }, 120_000);
});
