/**
 * SPEC §10, input side, all at once against one server: sources that stall, trickle, explode or
 * redirect to a metadata address, a source full of bad bytes, and an `$import` with a stalled
 * input, while a good `$import` runs and an ordinary client reads. Afterwards the counts are exact.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { gzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { patients, startImport, startSourceServer, waitFor, type SourceServer } from '../helpers/import-sources.ts';
import { whileReading } from '../helpers/neighbour.ts';

let server: TestServer;
let sources: SourceServer;

beforeAll(async () => {
  sources = startSourceServer();
  server = await startTestServer({
    FHIRHOSE_IMPORT_BATCH_LINES: '500',
    FHIRHOSE_SOURCE_CONNECT_TIMEOUT: '1',
    FHIRHOSE_SOURCE_STALL_TIMEOUT: '1',
    FHIRHOSE_SOURCE_MIN_RATE: '20000',
    FHIRHOSE_SOURCE_RATE_WINDOW: '1.5',
  });
  sources.set('/seed.ndjson', patients(10, 'seed'));
  const res = await server.request('/Patient/$load', { method: 'POST', json: { source: sources.url('/seed.ndjson') } });
  expect(res.status).toBe(200);
});
afterAll(async () => {
  await server.stop();
  await sources.stop();
});

async function load(source: string): Promise<{ status: number; body: Record<string, any> }> {
  const res = await server.request('/Patient/$load', { method: 'POST', json: { source } });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

function badBytes(): Uint8Array {
  const enc = new TextEncoder();
  const rows: Uint8Array[] = [];
  for (let no = 1; no <= 1000; no++) {
    if (no === 100) rows.push(new Uint8Array([0x7b, 0xff, 0x7d]));
    else if (no === 200) rows.push(enc.encode(`{"resourceType":"Patient","id":"deep","x":${'['.repeat(50_000)}${']'.repeat(50_000)}}`));
    else if (no === 300) rows.push(enc.encode('{"resourceType":"Patient","id":"huge","x":1e999999}'));
    else rows.push(enc.encode(JSON.stringify({ resourceType: 'Patient', id: `bytes-${no}` })));
  }
  return Buffer.concat(rows.flatMap((r) => [r, enc.encode('\n')]));
}

test('abusive sources of every kind at once: each refused clearly, the neighbour served, a good import exact', async () => {
  const line = JSON.stringify({ resourceType: 'Patient', id: 'bomb', text: { status: 'generated', div: 'x'.repeat(900) } }) + '\n';
  const member = gzipSync(line.repeat(1024), { level: 9 });
  const bomb = new Uint8Array(member.length * 1024);
  for (let i = 0; i < 1024; i++) bomb.set(member, i * member.length);
  sources.set('/stall.ndjson', patients(300, 'stall'), { holdAfter: 3000 });
  sources.set('/trickle.ndjson', patients(2000, 'trickle'), { trickle: { bytes: 500, everyMs: 100 } });
  sources.set('/bomb.ndjson.gz', bomb);
  sources.set('/meta.ndjson', '', { redirect: 'http://169.254.169.254/latest/meta-data/iam/' });
  sources.set('/bytes.ndjson', badBytes());
  sources.set('/good-a.ndjson', patients(2000, 'good-a'), { trickle: { bytes: 64 * 1024, everyMs: 20 } });
  sources.set('/good-b.ndjson.gz', gzipSync(patients(2000, 'good-b')));
  sources.set('/import-stall.ndjson', patients(2000, 'istall'), { holdAfter: 20_000 });

  const good = await startImport(server, { id: 'good', inputs: [{ type: 'Patient', url: sources.url('/good-a.ndjson') }, { type: 'Patient', url: sources.url('/good-b.ndjson.gz') }] });
  const stuck = await startImport(server, { id: 'stuck', inputs: [{ type: 'Patient', url: sources.url('/import-stall.ndjson') }] });
  expect([good.status, stuck.status]).toEqual([201, 201]);

  const [stall, trickle, bombed, meta, bytes, goodDone, stuckDone] = await whileReading(server, 'seed-1', Promise.all([
    load(sources.url('/stall.ndjson')),
    load(sources.url('/trickle.ndjson')),
    load(sources.url('/bomb.ndjson.gz')),
    load(sources.url('/meta.ndjson')),
    load(sources.url('/bytes.ndjson')),
    waitFor(server, 'good', (s) => s.status !== 'active', 60_000),
    waitFor(server, 'stuck', (s) => s.status !== 'active', 60_000),
  ]));

  expect(stall.status).toBe(504);
  expect(stall.body.message).toContain('FHIRHOSE_SOURCE_STALL_TIMEOUT');
  expect(trickle.status).toBe(504);
  expect(trickle.body.message).toContain('FHIRHOSE_SOURCE_MIN_RATE');
  expect(bombed.status).toBe(422);
  expect(bombed.body.message).toContain('probable gzip bomb');
  expect(meta.status).toBe(403);
  expect(meta.body.message).toContain('169.254.169.254');
  expect(bytes.status).toBe(200);
  expect(bytes.body).toMatchObject({ total: 997, errorCount: 3 });
  expect(bytes.body.errors.map((e: { line: number }) => e.line)).toEqual([100, 200, 300]);
  expect(goodDone.status).toBe('done');
  expect(goodDone.inputs.map((i: { imported: number }) => i.imported)).toEqual([2000, 2000]);
  expect(stuckDone.status).toBe('error');
  expect(stuckDone.message).toContain('FHIRHOSE_SOURCE_STALL_TIMEOUT');

  const counts = await server.sql`
    select count(*) filter (where id like 'seed-%')::int as seed, count(*) filter (where id like 'bytes-%')::int as bytes,
           count(*) filter (where id like 'good-%')::int as good, count(*) filter (where id like 'istall-%')::int as istall,
           count(*) filter (where id like 'stall-%' or id like 'trickle-%' or id = 'bomb')::int as refused
    from patient`;
  expect(counts[0]).toEqual({ seed: 10, bytes: 997, good: 4000, istall: stuckDone.inputs[0].imported, refused: 0 });
}, 120_000);
