/**
 * SPEC §10 on `$export` file downloads (#9): they have slots of their own
 * (FHIRHOSE_DOWNLOAD_CONCURRENCY, a short queue, then 503 + Retry-After), apart from the bulk cap,
 * and a reader slower than FHIRHOSE_SLOW_READER_BYTES_PER_SEC is cut, its slot freed; a cut
 * download resumes with Range to the same bytes, plain or gzip. Ordinary clients are served
 * meanwhile; wrong credentials never take a slot; HEAD never keeps one.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { gunzipSync } from 'node:zlib';
import { basic, startTestServer, type TestServer } from '../helpers/server.ts';
import { dechunk, rawGet, type RawResponse } from '../operations/dump-helpers.ts';
import { kickOff, waitForManifest } from '../helpers/export.ts';
import { within } from '../helpers/wait.ts';

const ROWS = 10_000;

/**
 * ~32 MB of ndjson that gzips only to about half (hex digests, not a repeated string): both
 * representations are far more than the socket buffers hold, so a reader that reads nothing stalls.
 */
async function fill(server: TestServer): Promise<void> {
  await server.sql.unsafe(`insert into observation (id, txid, status, resource)
    select 'o' || g, g, 'created', jsonb_build_object('resourceType', 'Observation', 'id', 'o' || g, 'status', 'final',
      'note', jsonb_build_array(jsonb_build_object('text', (select string_agg(md5(g::text || '.' || i::text), '') from generate_series(1, 100) i))))
    from generate_series(1, ${ROWS}) g`);
  await server.sql`insert into patient (id, txid, status, resource) values ('p1', 1, 'created', '{"resourceType":"Patient","id":"p1"}')`;
}

/** The path of the one Observation file of a fresh export. */
async function exportedFile(server: TestServer): Promise<string> {
  const manifest = await waitForManifest(server, await kickOff(server, '/$export?_type=Observation'), { timeoutMs: 150_000 });
  expect(manifest.output).toHaveLength(1);
  expect(manifest.output[0]!.count).toBe(ROWS);
  return new URL(manifest.output[0]!.url).pathname;
}

/** The whole file, plain, read at full speed. */
async function plainFile(server: TestServer, file: string): Promise<Buffer> {
  const res = await server.request(file, { headers: { 'accept-encoding': 'identity' } });
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

/** A download whose client reads nothing after the headers: the socket is paused at once. */
async function stalled(server: TestServer, file: string, encoding: 'identity' | 'gzip' = 'identity'): Promise<RawResponse> {
  const held = await rawGet(server.url, file, { 'accept-encoding': encoding });
  held.socket.pause();
  return held;
}

/** The body bytes a raw response got (de-chunked when the server chunked it). */
function bodyOf(raw: RawResponse, bytes: Buffer): Buffer {
  return raw.headers['transfer-encoding'] === 'chunked' ? dechunk(bytes).body : bytes;
}

/** The rest of `file` from byte `from` (206), read in full through a raw socket, and the whole size. */
async function rest(server: TestServer, file: string, from: number, encoding: 'identity' | 'gzip'): Promise<{ body: Buffer; size: number }> {
  const res = await rawGet(server.url, file, { 'accept-encoding': encoding, range: `bytes=${from}-` });
  expect(res.status).toBe(206);
  const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers['content-range'] ?? '');
  expect(range?.[1]).toBe(String(from));
  const body = bodyOf(res, await res.ended);
  expect(body.length).toBe(Number(range![2]) - from + 1);
  return { body, size: Number(range![3]) };
}

describe('$export downloads past FHIRHOSE_DOWNLOAD_CONCURRENCY', () => {
  let server: TestServer;
  let file: string;
  let plain: Buffer;
  const held: RawResponse[] = [];
  beforeAll(async () => {
    // two download slots; one bulk slot and no bulk queue, so a download on the bulk cap would show;
    // the slow-reader window is long: here only the clients end their downloads
    server = await startTestServer({
      FHIRHOSE_DOWNLOAD_CONCURRENCY: '2', FHIRHOSE_BULK_CONCURRENCY: '1', FHIRHOSE_BULK_QUEUE: '0', FHIRHOSE_SLOW_READER_WINDOW_MS: '600000',
    });
    await fill(server);
    file = await exportedFile(server);
    plain = await plainFile(server, file);
  }, 200_000);
  afterAll(async () => {
    for (const h of held) h.socket.destroy();
    await server.stop();
  }, 15_000);

  test('HEAD never keeps a slot: five HEADs through two slots, then a download is served at once', async () => {
    for (let i = 0; i < 5; i++) {
      const head = await server.request(file, { method: 'HEAD', headers: { 'accept-encoding': 'identity' } });
      expect(head.status).toBe(200);
      expect(Number(head.headers.get('content-length'))).toBe(plain.length);
    }
    expect(Buffer.compare(await plainFile(server, file), plain)).toBe(0);
  }, 60_000);

  test('readers that read nothing hold the slots: the next downloads wait, then 503 + Retry-After naming the variable; CRUD, $dump and wrong credentials are answered meanwhile; the slots return when the readers leave', async () => {
    held.push(await stalled(server, file), await stalled(server, file, 'gzip'));
    for (const h of held) expect(h.status).toBe(200);
    // two more wait in the queue (as many as the slots) ...
    const queued = [rawGet(server.url, file), rawGet(server.url, file)];
    // ... so a further one is refused at once, and the queued ones once their wait is over (which
    // of the three comes last does not matter: each gets the 503)
    const refusals = [await server.request(file, { headers: { 'accept-encoding': 'identity' } })];
    for (const q of await Promise.all(queued)) {
      expect(q.status).toBe(503);
      expect(q.headers['retry-after']).toBe('5');
      const outcome = JSON.parse(bodyOf(q, await q.ended).toString());
      expect(outcome.issue[0].diagnostics).toContain('FHIRHOSE_DOWNLOAD_CONCURRENCY');
    }
    refusals.push(await server.request(file, { headers: { 'accept-encoding': 'gzip' } }));
    for (const refused of refusals) {
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('5');
      const outcome = (await refused.json()) as { resourceType: string; issue: { diagnostics: string }[] };
      expect(outcome.resourceType).toBe('OperationOutcome');
      expect(outcome.issue[0]!.diagnostics).toMatch(/running 2 \$export file downloads, its limit \(FHIRHOSE_DOWNLOAD_CONCURRENCY\)/);
    }
    // an ordinary client is served meanwhile: a read, a search, and a $dump (the bulk cap is not taken by downloads)
    const read = await server.request('/Observation/o42', { signal: AbortSignal.timeout(30_000) });
    expect(read.status).toBe(200);
    expect(((await read.json()) as { id: string }).id).toBe('o42');
    const dump = await server.request('/Patient/$dump', { signal: AbortSignal.timeout(30_000) });
    expect(dump.status).toBe(200);
    expect((await dump.text()).trim().split('\n')).toHaveLength(1);
    // wrong or no credentials: 401, never a slot nor a place in the queue (else 503 after a wait)
    expect((await server.request(file, { auth: basic('root', 'wrong') })).status).toBe(401);
    expect((await server.request(file, { auth: null })).status).toBe(401);
    // the readers leave: their slots come back, and a download is whole again
    for (const h of held.splice(0)) h.socket.destroy();
    await within(60_000, async () => {
      const res = await server.request(file, { headers: { 'accept-encoding': 'identity' } });
      if (res.status === 503) { await res.arrayBuffer(); return false; }
      expect(res.status).toBe(200);
      expect(Buffer.compare(Buffer.from(await res.arrayBuffer()), plain)).toBe(0);
      return true;
    }, 'a whole download after the readers left');
  }, 120_000);
});

describe('slow $export downloaders are cut', () => {
  let server: TestServer;
  let file: string;
  let plain: Buffer;
  const log: string[] = [];
  beforeAll(async () => {
    server = await startTestServer({
      FHIRHOSE_DOWNLOAD_CONCURRENCY: '2', FHIRHOSE_SLOW_READER_BYTES_PER_SEC: '16384', FHIRHOSE_SLOW_READER_WINDOW_MS: '2000',
    }, { log: (line) => log.push(line) });
    await fill(server);
    file = await exportedFile(server);
    plain = await plainFile(server, file);
  }, 200_000);
  afterAll(async () => { await server.stop(); }, 15_000);

  test('readers that stop reading are closed after the window, their slots freed; each resumes with Range to the same bytes, plain and gzip', async () => {
    const slow = { identity: await stalled(server, file), gzip: await stalled(server, file, 'gzip') };
    expect(slow.identity.status).toBe(200);
    expect(slow.gzip.status).toBe(200);
    // a CRUD read is served while both slots are held
    const read = await server.request('/Observation/o7', { signal: AbortSignal.timeout(30_000) });
    expect(read.status).toBe(200);
    // the server cuts both ...
    const cuts = () => log.filter((l) => l.includes(`GET ${file}`) && l.includes('the response was cut'));
    await within(90_000, () => cuts().length === 2, () => `two cuts (seen ${cuts().length})`);
    expect(cuts()[0]).toContain('FHIRHOSE_SLOW_READER_BYTES_PER_SEC');
    // ... and their slots are free at once: two whole downloads (a third would wait, then 503)
    const [a, b] = await Promise.all([plainFile(server, file), plainFile(server, file)]);
    expect(Buffer.compare(a, plain)).toBe(0);
    expect(Buffer.compare(b, plain)).toBe(0);
    // the cut sockets, read now, end short of the file: the server closed them
    slow.identity.socket.resume();
    slow.gzip.socket.resume();
    const gotPlain = bodyOf(slow.identity, await slow.identity.ended);
    const gotGzip = bodyOf(slow.gzip, await slow.gzip.ended);
    expect(gotPlain.length).toBeLessThan(plain.length);
    // a client resumes each from where it stopped: the same bytes as a whole download
    const restPlain = await rest(server, file, gotPlain.length, 'identity');
    expect(restPlain.size).toBe(plain.length);
    expect(Buffer.compare(Buffer.concat([gotPlain, restPlain.body]), plain)).toBe(0);
    const restGzip = await rest(server, file, gotGzip.length, 'gzip');
    expect(gotGzip.length).toBeLessThan(restGzip.size);
    const resumedGzip = Buffer.concat([gotGzip, restGzip.body]);
    expect(resumedGzip.length).toBe(restGzip.size);
    expect(Buffer.compare(gunzipSync(resumedGzip), plain)).toBe(0);
  }, 180_000);
});
