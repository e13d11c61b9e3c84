/**
 * SPEC §10 for `$load`: sources that stall, trickle, never answer, sit outside FHIRHOSE_SOURCE_ALLOW,
 * redirect out of it, or expand past the size and ratio bounds each end the load with a clear error
 * naming the source and the limit; meanwhile an ordinary client reads a Patient within a bound, and
 * the tables are unchanged.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { stat } from 'node:fs/promises';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { patients, startSourceServer, type SourceServer } from '../helpers/import-sources.ts';
import { snapshot } from '../helpers/sources.ts';
import { rssBytes, whileReading } from '../helpers/neighbour.ts';

const MAX_SOURCE_BYTES = 3_000_000;
let server: TestServer;
let sources: SourceServer;
let silent: net.Server;
let silentUrl: string;

beforeAll(async () => {
  sources = startSourceServer();
  // Accepts the connection and never answers: only the connect timeout ends the wait.
  silent = net.createServer(() => {}).listen(0, '127.0.0.1');
  await new Promise((resolve) => silent.once('listening', resolve));
  silentUrl = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}/ok/Patient.ndjson`;
  const silentPrefix = silentUrl.replace('Patient.ndjson', '');
  server = await startTestServer({
    FHIRHOSE_SOURCE_CONNECT_TIMEOUT: '1',
    FHIRHOSE_SOURCE_STALL_TIMEOUT: '1',
    FHIRHOSE_SOURCE_MIN_RATE: '20000',
    FHIRHOSE_SOURCE_RATE_WINDOW: '1.5',
    FHIRHOSE_MAX_COMPRESSION_RATIO: '200',
    FHIRHOSE_SOURCE_ALLOW: `${sources.url('/ok/')}, ${silentPrefix}`,
  });
  sources.set('/ok/seed.ndjson', patients(20, 'seed'));
  expect((await load(sources.url('/ok/seed.ndjson'))).status).toBe(200);
});

afterAll(async () => {
  await server.stop();
  await sources.stop();
  silent.close();
});

async function load(source: string, method = 'copy', target = server) {
  const res = await target.request('/Patient/$load', { method: 'POST', json: { source, method } });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

/** Loads `source` with both methods while a neighbour reads; each answer is `status` and says `says`. */
async function refused(source: string, status: number, says: (string | RegExp)[], target = server): Promise<void> {
  const before = await snapshot(target.sql, ['Patient']);
  if (target !== server) await load(sources.url('/ok/seed.ndjson'), 'copy', target);
  for (const method of ['copy', 'insert']) {
    const { status: got, body } = await whileReading(target, 'seed-1', load(source, method, target));
    expect({ got, message: body.message }).toMatchObject({ got: status });
    for (const part of says) expect(body.message).toMatch(part);
  }
  if (target === server) expect(await snapshot(target.sql, ['Patient'])).toEqual(before);
  else expect((await target.sql`select count(*)::int as n from patient`)[0]!.n).toBe(20);
}

test('a source that sends its headers and then nothing ends the load with 504 after the stall timeout', async () => {
  sources.set('/ok/stalled.ndjson', patients(200, 'stall'), { holdAfter: 2000 });
  await refused(sources.url('/ok/stalled.ndjson'), 504, ['Cannot load "stalled.ndjson"', 'sent no bytes for 1 s (FHIRHOSE_SOURCE_STALL_TIMEOUT)']);
});

test('a source that trickles below the minimum rate ends the load with 504', async () => {
  sources.set('/ok/trickle.ndjson', patients(2000, 'slow'), { trickle: { bytes: 500, everyMs: 100 } });
  await refused(sources.url('/ok/trickle.ndjson'), 504, ['Cannot load "trickle.ndjson"', /below the minimum of 20000 bytes\/s \(FHIRHOSE_SOURCE_MIN_RATE\)/]);
});

test('a source that accepts the connection and never answers ends the load with 504 after the connect timeout', async () => {
  await refused(silentUrl, 504, ['Cannot load "Patient.ndjson"', 'sent no response within 1 s (FHIRHOSE_SOURCE_CONNECT_TIMEOUT)']);
});

test('FHIRHOSE_SOURCE_ALLOW: a URL under no prefix is 403, never fetched; a redirect out of it is 403', async () => {
  sources.set('/elsewhere/Patient.ndjson', patients(5, 'no'));
  sources.set('/ok/redirect.ndjson', '', { redirect: sources.url('/elsewhere/Patient.ndjson') });
  sources.set('/ok/to-metadata.ndjson', '', { redirect: 'http://169.254.169.254/latest/meta-data/' });
  const hits = sources.hits('/elsewhere/Patient.ndjson');
  await refused(sources.url('/elsewhere/Patient.ndjson'), 403, ['is not under any prefix of FHIRHOSE_SOURCE_ALLOW']);
  await refused(sources.url('/ok/redirect.ndjson'), 403, [
    `${sources.url('/ok/redirect.ndjson')} redirected to ${sources.url('/elsewhere/Patient.ndjson')}, which is refused`,
    'FHIRHOSE_SOURCE_ALLOW',
  ]);
  await refused(sources.url('/ok/to-metadata.ndjson'), 403, ['redirected to http://169.254.169.254/latest/meta-data/, which is refused']);
  expect(sources.hits('/elsewhere/Patient.ndjson')).toBe(hits);
});

test('a redirect that stays under an allowed prefix is followed', async () => {
  sources.set('/ok/real.ndjson', patients(7, 'moved'));
  sources.set('/ok/moved.ndjson', '', { redirect: '/ok/real.ndjson' });
  const { status, body } = await load(sources.url('/ok/moved.ndjson'));
  expect({ status, body }).toEqual({ status: 200, body: { total: 7 } });
});

test('a gzip bomb is refused as such with nothing written; memory and database size stay bounded', async () => {
  // 1 GiB of one repeated Patient line, as 1,024 gzip members of 1 MiB each (multi-member gzip).
  const line = JSON.stringify({ resourceType: 'Patient', id: 'bomb', text: { status: 'generated', div: 'x'.repeat(900) } }) + '\n';
  const member = gzipSync(line.repeat(Math.ceil((1 << 20) / line.length)), { level: 9 });
  const bomb = new Uint8Array(member.length * 1024);
  for (let i = 0; i < 1024; i++) bomb.set(member, i * member.length);
  sources.set('/ok/bomb.ndjson.gz', bomb);
  const sizeBefore = await databaseSize();
  const rssBefore = rssBytes();
  await refused(sources.url('/ok/bomb.ndjson.gz'), 422, [
    'Cannot load "bomb.ndjson.gz"',
    /the gzip expands more than 200 times .* probable gzip bomb \(FHIRHOSE_MAX_COMPRESSION_RATIO\)/,
  ]);
  expect(rssBytes() - rssBefore).toBeLessThan(200 * 1024 * 1024);
  expect((await databaseSize()) - sizeBefore).toBeLessThan(50 * 1024 * 1024);
  expect((await server.sql`select count(*)::int as n from patient where id = 'bomb'`)[0]!.n).toBe(0);
});

test('a source over FHIRHOSE_MAX_SOURCE_BYTES is 413 with nothing written, plain or gzipped; one under it loads', async () => {
  const small = await startTestServer({ FHIRHOSE_MAX_SOURCE_BYTES: String(MAX_SOURCE_BYTES) });
  const big = patients(30_000, 'big');
  expect(big.length).toBeGreaterThan(MAX_SOURCE_BYTES);
  sources.set('/ok/big.ndjson', big);
  sources.set('/ok/big.ndjson.gz', gzipSync(big));
  try {
    for (const path of ['/ok/big.ndjson', '/ok/big.ndjson.gz']) {
      await refused(sources.url(path), 413, [`the source expands to more than ${MAX_SOURCE_BYTES} bytes of ndjson (FHIRHOSE_MAX_SOURCE_BYTES)`], small);
    }
    sources.set('/ok/small.ndjson.gz', gzipSync(patients(10_000, 'small')));
    expect(await load(sources.url('/ok/small.ndjson.gz'), 'copy', small)).toEqual({ status: 200, body: { total: 10_000 } });
  } finally {
    await small.stop();
  }
});

async function databaseSize(): Promise<number> {
  const [row] = await server.sql`select pg_database_size(current_database())::float8 as size`;
  return row!.size as number;
}

test('a missing FHIRHOSE_IMPORT_ROOT is created at start: a file:// source under it is 404, not 500', async () => {
  const root = `${server.importRoot}/created/at/start`;
  const fresh = await startTestServer({ FHIRHOSE_IMPORT_ROOT: root });
  try {
    expect((await stat(root)).isDirectory()).toBe(true);
    const res = await fresh.request('/$load', { method: 'POST', json: { source: `file://${root}/Patient.ndjson` } });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { message: string }).message).toContain('does not exist');
  } finally {
    await fresh.stop();
  }
});
