/**
 * `$export` of big rows that do not compress: Binary resources of 12 MB, base64 of random bytes (a
 * scanned PDF), through a real child server whose memory is read from /proc (SPEC §9: under 300 MB,
 * not growing with the data). The gzip writer stores such bytes (src/streams/gzip.ts STORE_ABOVE);
 * before the export's file writer collected garbage above 200 MB (src/memory.ts), 14 such rows took
 * the server to 317–394 MB, since its faster writer let the line buffers of 13 MB rows pile up.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import crypto from 'node:crypto';
import { gunzipSync, inflateRawSync, constants } from 'node:zlib';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { spawnServer, type Child } from '../helpers/child-server.ts';
import { kickOff, rootRequester, waitForManifest, type Requester } from '../helpers/export.ts';
import { sampleRss } from '../helpers/rss.ts';

const BIG = 16;
const BIG_BYTES = 9_000_000; // 12 MB of base64 each: 192 MB in all
const SMALL = 300;
let child: Child;
let server: Requester;
const digests = new Map<string, string>(); // id → sha1 of its data
const sha1 = (text: string) => crypto.createHash('sha1').update(text).digest('hex');

beforeAll(async () => {
  child = await spawnServer(await freshDatabase(), await freePort(), { FHIRHOSE_LOG: 'quiet' });
  server = rootRequester(child);
  // an upload made as it is sent, so that the test holds one resource at a time
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i === BIG + SMALL) return controller.close();
      const id = `bin-${i}`;
      const data = i < BIG ? crypto.randomBytes(BIG_BYTES).toString('base64') : Buffer.from(`note ${i} `.repeat(30)).toString('base64');
      digests.set(id, sha1(data));
      i++;
      controller.enqueue(Buffer.from(JSON.stringify({ resourceType: 'Binary', id, contentType: 'application/pdf', data }) + '\n'));
    },
  });
  const res = await server.request('/Binary/$load', { method: 'POST', body, headers: { 'content-type': 'application/fhir+ndjson' }, duplex: 'half' } as RequestInit);
  expect({ status: res.status, body: await res.json() }).toEqual({ status: 200, body: { total: BIG + SMALL } });
}, 120_000);

afterAll(() => { child?.proc.kill('SIGKILL'); });

test('a $export of 12 MB Binary resources that do not compress: one gzip member a file, every resource intact, the server under 300 MB', async () => {
  const rss = sampleRss(child.proc.pid);
  const statusPath = await kickOff(server, '/$export?_type=Binary');
  const manifest = await waitForManifest(server, statusPath, { timeoutMs: 120_000 });
  const peak = rss.stop();
  let seen = 0;
  let gzipped = 0, plain = 0;
  for (const item of manifest.output) {
    const res = await server.request(new URL(item.url).pathname, { headers: { 'accept-encoding': 'gzip' }, decompress: false } as RequestInit);
    expect(res.headers.get('content-encoding')).toBe('gzip');
    const gz = Buffer.from(await res.arrayBuffer());
    // one member: a single deflate stream from the 10-byte header to the 8-byte trailer
    const text = Buffer.from(inflateRawSync(gz.subarray(10, gz.length - 8), { finishFlush: constants.Z_FINISH }));
    expect(text.equals(gunzipSync(gz))).toBe(true);
    gzipped += gz.length;
    plain += text.length;
    for (const line of text.toString().split('\n').filter(Boolean)) {
      const resource = JSON.parse(line);
      expect({ id: resource.id, data: sha1(resource.data) }).toEqual({ id: resource.id, data: digests.get(resource.id)! });
      seen++;
    }
  }
  expect(seen).toBe(BIG + SMALL);
  // the random base64 goes out stored: the files are about as big as the lines (level 1 saves ~0.2 % on it)
  expect(gzipped / plain).toBeGreaterThan(0.95);
  expect(peak).toBeLessThan(300);
}, 180_000);
