/**
 * An upload bigger than Bun's own default body limit (128 MiB), which used to answer 413 with an
 * empty body before fhirhose saw the request (SPEC §13: an upload is streamed, bounded only by
 * FHIRHOSE_MAX_SOURCE_BYTES like any source). Plain, so that the bytes on the wire are that many.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { basic, startTestServer, ROOT_SECRET, type TestServer } from '../helpers/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_SOURCE_STALL_TIMEOUT: '20' });
});
afterAll(async () => { await server.stop(); });

const BINARIES = 1_400;
const DATA = Buffer.alloc(100_000, 'QUJD').toString(); // 100 KB of base64 per resource: 140 MB in all

/** The ndjson, made as it is sent: `sent()` says how many bytes went. */
function ndjsonBody(prefix: string): { body: ReadableStream<Uint8Array>; sent: () => number } {
  let i = 0;
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i === BINARIES) return controller.close();
      const lines = Array.from({ length: 50 }, () => JSON.stringify({ resourceType: 'Binary', id: `${prefix}-${i++}`, contentType: 'application/pdf', data: DATA }) + '\n').join('');
      const bytes = Buffer.from(lines);
      sent += bytes.length;
      controller.enqueue(bytes);
    },
  });
  return { body, sent: () => sent };
}

async function countLike(prefix: string): Promise<number> {
  return (await server.sql`select count(*)::int as n from "binary" where id like ${prefix + '-%'}`)[0]!.n;
}

test('an upload over 128 MiB is loaded whole, every resource with its data', async () => {
  const { body, sent } = ndjsonBody('big');
  const res = await server.request('/Binary/$load', { method: 'POST', body, headers: { 'content-type': 'application/fhir+ndjson' }, duplex: 'half' } as RequestInit);
  expect({ status: res.status, body: await res.json() }).toEqual({ status: 200, body: { total: BINARIES } });
  expect(sent()).toBeGreaterThan(128 * 1024 * 1024);
  expect(await countLike('big')).toBe(BINARIES);
  const [row] = await server.sql`select length(resource->>'data') as n from "binary" where id = 'big-777'`;
  expect(Number(row!.n)).toBe(DATA.length);
});

test('the same upload with a wrong password is a 401 before the body is read, and writes nothing', async () => {
  const { body, sent } = ndjsonBody('nocred');
  const res = await server.request('/Binary/$load', { method: 'POST', body, headers: { 'content-type': 'application/fhir+ndjson' }, duplex: 'half', auth: basic('root', 'not-' + ROOT_SECRET) } as RequestInit);
  expect(res.status).toBe(401);
  expect((await res.json()).resourceType).toBe('OperationOutcome');
  expect(sent()).toBeLessThan(64 * 1024 * 1024);
  expect(await countLike('nocred')).toBe(0);
});
