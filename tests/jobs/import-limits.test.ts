/**
 * SPEC §10 for `$import`: a source that stalls, trickles, expands like a bomb or sits outside
 * FHIRHOSE_SOURCE_ALLOW puts its input in `error` with a message naming the source and the limit;
 * a bad byte is one bad line (in the first run and after force-resume), never a session `error`.
 * Meanwhile an ordinary client reads a Patient within a bound, and what was imported is exact.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { gzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { count, patients, startImport, startSourceServer, waitFor, type SourceServer } from '../helpers/import-sources.ts';
import { whileReading } from '../helpers/neighbour.ts';

let server: TestServer;
let sources: SourceServer;

beforeAll(async () => {
  sources = startSourceServer();
  server = await startTestServer({
    FHIRHOSE_IMPORT_BATCH_LINES: '100',
    FHIRHOSE_SOURCE_STALL_TIMEOUT: '1',
    FHIRHOSE_SOURCE_MIN_RATE: '20000',
    FHIRHOSE_SOURCE_RATE_WINDOW: '1.5',
    FHIRHOSE_SOURCE_ALLOW: sources.url('/ok/'),
  });
  sources.set('/ok/seed.ndjson', patients(5, 'seed'));
  await startImport(server, { id: 'seed', inputs: [{ type: 'Patient', url: sources.url('/ok/seed.ndjson') }] });
  await waitFor(server, 'seed', (s) => s.status === 'done');
});
afterAll(async () => {
  await server.stop();
  await sources.stop();
});

async function forceResume(id: string): Promise<void> {
  const res = await server.request('/$import', { method: 'POST', json: { id, action: 'force-resume' } });
  expect(res.status).toBe(200);
}

/** The bound of `failing`: its wait (60 s) and the reads around it. */
const FAILING_MS = 90_000;

/** Starts a session of one good input and `bad`, waits (reading a Patient meanwhile) until it is no longer active. */
async function failing(id: string, bad: string) {
  sources.set(`/ok/${id}-good.ndjson`, patients(300, `${id}-good`));
  const res = await startImport(server, { id, inputs: [{ type: 'Patient', url: sources.url(`/ok/${id}-good.ndjson`) }, { type: 'Patient', url: bad }] });
  expect(res.status).toBe(201);
  const session = await whileReading(server, 'seed-1', waitFor(server, id, (s) => s.status !== 'active'));
  expect(session.status).toBe('error');
  expect(session.inputs[1].status).toBe('error');
  expect(session.inputs[1].message).toBe(session.message);
  // Nothing half-written: the table holds exactly what the good input says it imported.
  const [row] = await server.sql`select count(*)::int as n from patient where id like ${id + '-good-%'}`;
  expect(row!.n).toBe(session.inputs[0].imported);
  return session;
}

test('a source that stalls puts its input in error, naming it and FHIRHOSE_SOURCE_STALL_TIMEOUT', async () => {
  sources.set('/ok/stall.ndjson', patients(500, 'stall'), { holdAfter: 5000 });
  const session = await failing('stall', sources.url('/ok/stall.ndjson'));
  expect(session.message).toContain('inputs[1] (Patient): Cannot load "stall.ndjson"');
  expect(session.message).toContain('sent no bytes for 1 s (FHIRHOSE_SOURCE_STALL_TIMEOUT)');
}, FAILING_MS);

test('a source that trickles below the minimum rate puts its input in error', async () => {
  sources.set('/ok/trickle.ndjson', patients(3000, 'trickle'), { trickle: { bytes: 500, everyMs: 100 } });
  const session = await failing('trickle', sources.url('/ok/trickle.ndjson'));
  expect(session.message).toContain('Cannot load "trickle.ndjson"');
  expect(session.message).toContain('(FHIRHOSE_SOURCE_MIN_RATE)');
}, FAILING_MS);

test('a gzip bomb puts its input in error as a probable bomb', async () => {
  // Long lines: the ratio is judged past 1 MiB of output (RATIO_FLOOR), reached here in ~115 lines,
  // two batches, rather than ten batches of short lines (tens of seconds on a loaded machine).
  const line = JSON.stringify({ resourceType: 'Patient', id: 'bomb-1', text: { status: 'generated', div: 'x'.repeat(9000) } }) + '\n';
  const member = gzipSync(line.repeat(128), { level: 9 }); // ~1.2 MB from ~1.5 kB
  const bomb = new Uint8Array(member.length * 1024);
  for (let i = 0; i < 1024; i++) bomb.set(member, i * member.length);
  sources.set('/ok/bomb.ndjson.gz', bomb);
  const session = await failing('bomb', sources.url('/ok/bomb.ndjson.gz'));
  expect(session.message).toContain('probable gzip bomb (FHIRHOSE_MAX_COMPRESSION_RATIO)');
}, FAILING_MS);

test('a URL outside FHIRHOSE_SOURCE_ALLOW is refused at start with 403, and no session is created', async () => {
  sources.set('/elsewhere/p.ndjson', patients(3, 'elsewhere'));
  const res = await startImport(server, { id: 'outside', inputs: [{ type: 'Patient', url: sources.url('/elsewhere/p.ndjson') }] });
  expect(res.status).toBe(403);
  expect(((await res.json()) as { message: string }).message).toContain('FHIRHOSE_SOURCE_ALLOW');
  expect((await server.request('/BulkImportStatus/outside')).status).toBe(404);
  expect(sources.hits('/elsewhere/p.ndjson')).toBe(0);
});

test('a redirect out of FHIRHOSE_SOURCE_ALLOW puts the input in error', async () => {
  sources.set('/ok/away.ndjson', '', { redirect: sources.url('/elsewhere/p.ndjson') });
  const session = await failing('away', sources.url('/ok/away.ndjson'));
  expect(session.message).toContain('redirected to');
  expect(session.message).toContain('FHIRHOSE_SOURCE_ALLOW');
  expect(sources.hits('/elsewhere/p.ndjson')).toBe(0);
}, FAILING_MS);

test('bad bytes are bad lines in $import, also when force-resume replays past them: done, exact counts', async () => {
  const enc = new TextEncoder();
  const rows: Uint8Array[] = [];
  for (let no = 1; no <= 1000; no++) {
    if (no === 250) rows.push(new Uint8Array([...enc.encode('{"resourceType":"Patient","id":"x'), 0xc3, 0x28, ...enc.encode('"}')]));
    else if (no === 500) rows.push(enc.encode(`{"resourceType":"Patient","id":"deep","x":${'['.repeat(300)}${']'.repeat(300)}}`));
    else if (no === 750) rows.push(enc.encode('{"resourceType":"Patient","id":"huge","multipleBirthInteger":1e999999}'));
    else rows.push(enc.encode(JSON.stringify({ resourceType: 'Patient', id: `bytes-${no}` })));
  }
  const body = Buffer.concat(rows.flatMap((r) => [r, enc.encode('\n')]));
  // Stalls after 60 %: the input fails past the first bad lines, and force-resume replays from there.
  sources.set('/ok/bytes.ndjson', body, { holdAfter: Math.floor(body.length * 0.6) });
  await startImport(server, { id: 'bytes', inputs: [{ type: 'Patient', url: sources.url('/ok/bytes.ndjson') }] });
  const held = await waitFor(server, 'bytes', (s) => s.status !== 'active');
  expect(held.status).toBe('error');
  expect(held.message).toContain('FHIRHOSE_SOURCE_STALL_TIMEOUT');
  expect(held.inputs[0].checkpoint).toBeGreaterThanOrEqual(500);
  expect(held.inputs[0].errors.map((e: { line: number }) => e.line)).toEqual([250, 500]);
  sources.set('/ok/bytes.ndjson', body);
  await forceResume('bytes');
  const done = await waitFor(server, 'bytes', (s) => s.status !== 'active');
  expect(done.status).toBe('done');
  expect(done.inputs[0]).toMatchObject({ status: 'done', imported: 997, errorCount: 3, checkpoint: 1000 });
  expect(done.inputs[0].errors.map((e: { line: number }) => e.line)).toEqual([250, 500, 750]);
  expect(done.inputs[0].errors.map((e: { message: string }) => e.message)).toEqual([
    'line is not valid UTF-8 text', 'JSON is nested deeper than 200 levels', 'holds a number too large to store (over 1.8e308)',
  ]);
  const [row] = await server.sql`select count(*)::int as n from patient where id like 'bytes-%'`;
  expect(row!.n).toBe(997);
  expect(await count(server, 'patient')).toBeGreaterThanOrEqual(997);
});
