import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { freePort } from '../helpers/database.ts';
import { within } from '../helpers/wait.ts';
import { ndjson, serveSources, snapshot, type SourceServer } from '../helpers/sources.ts';

let server: TestServer;
let sources: SourceServer;
let outside: string;
const TYPES = ['Patient', 'Organization', 'Observation'];
beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_MAX_LINE_BYTES: '1024' });
  sources = serveSources();
  outside = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-outside-'));
  // Data already there, so "unchanged" means something.
  const seed = sources.put('/seed.ndjson', ndjson([
    ...Array.from({ length: 50 }, (_, i) => ({ resourceType: 'Patient', id: `p${i}`, gender: 'male' })),
    { resourceType: 'Organization', id: 'o1', name: 'Seed' },
  ]));
  await load({ source: seed });
  await load({ source: seed, update: true });
});
afterAll(async () => { sources.stop(); await server.stop(); fs.rmSync(outside, { recursive: true, force: true }); });

async function load(body: unknown, pathname = '/$load') {
  const res = await server.request(pathname, { method: 'POST', json: body });
  return { status: res.status, body: await res.json() as Record<string, any> };
}

const many = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ resourceType: 'Patient', id: `new${from + i}`, gender: 'female' }));

test('every kind of bad line is skipped and reported with its line number; the rest loads', async () => {
  const text = [
    JSON.stringify({ resourceType: 'Patient', id: 'good1' }),
    '{"resourceType": "Patient", "id": "broken"',
    '',
    '"just a string"',
    JSON.stringify({ resourceType: 'Patient' }),
    JSON.stringify({ id: 'no-type' }),
    JSON.stringify({ resourceType: 'Spaceship', id: 's1' }),
    JSON.stringify({ resourceType: 'Client', id: 'c1', secret: 'x' }),
    JSON.stringify({ resourceType: 'Patient', id: 'bad id!' }),
    JSON.stringify({ resourceType: 'Patient', id: 'long', text: 'x'.repeat(2000) }),
    JSON.stringify({ resourceType: 'Patient', id: 'good2' }),
  ].join('\n');
  const { status, body } = await load({ source: sources.put('/bad-lines.ndjson', text) });
  expect(status).toBe(200);
  expect(body.Patient).toBe(2);
  expect(body.errorCount).toBe(8);
  expect(body.errors.map((e: { line: number }) => e.line)).toEqual([2, 4, 5, 6, 7, 8, 9, 10]);
  const messages = body.errors.map((e: { message: string }) => e.message);
  expect(messages[0]).toStartWith('invalid JSON');
  expect(messages.slice(1)).toEqual([
    'not a JSON object',
    'id is missing',
    'resourceType is missing',
    'unknown resourceType "Spaceship"',
    'resourceType "Client" is a server type and cannot be loaded; use PUT /Client/<id>',
    'id "bad id!" is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)',
    'line is longer than the limit of 1024 bytes (FHIRHOSE_MAX_LINE_BYTES)',
  ]);
  expect((await server.sql`select count(*)::int as n from client where id = 'c1'`)[0]!.n).toBe(0);
});

test('only the first 100 bad lines are listed; errorCount counts them all', async () => {
  const text = [...Array.from({ length: 150 }, () => 'nope'), JSON.stringify({ resourceType: 'Patient', id: 'after' })].join('\n');
  const { body } = await load({ source: sources.put('/many-bad.ndjson', text) });
  expect(body.Patient).toBe(1);
  expect(body.errorCount).toBe(150);
  expect(body.errors.length).toBe(100);
  expect(body.errors[99].line).toBe(100);
});

test('a bad byte is a bad line: invalid UTF-8, deep nesting, huge numbers and NULs are skipped and reported, both methods', async () => {
  const enc = new TextEncoder();
  const rows: Uint8Array[] = [];
  const bad: Record<number, string> = {
    500: 'not valid UTF-8', 600: 'nested deeper than 200 levels', 700: 'number too large', 800: '\\u0000', 900: 'invalid JSON', 950: 'not valid UTF-8',
  };
  for (let no = 1; no <= 1000; no++) {
    const good = JSON.stringify({ resourceType: 'Patient', id: `bytes${no}` });
    if (no === 500) rows.push(new Uint8Array([...enc.encode('{"resourceType":"Patient","id":"x'), 0xc3, 0x28, ...enc.encode('"}')]));
    else if (no === 600) rows.push(enc.encode(`{"resourceType":"Patient","id":"deep","x":${'['.repeat(300)}${']'.repeat(300)}}`));
    else if (no === 700) rows.push(enc.encode('{"resourceType":"Patient","id":"huge","multipleBirthInteger":1e999999}'));
    else if (no === 800) rows.push(enc.encode('{"resourceType":"Patient","id":"nul","name":[{"text":"a\\u0000b"}]}'));
    else if (no === 900) rows.push(enc.encode('{"resourceType":"Patient","id":"raw\0nul"}'));
    else if (no === 950) rows.push(new Uint8Array([0xff, 0xfe, 0xfd]));
    else rows.push(enc.encode(good));
  }
  const joined = Buffer.concat(rows.flatMap((r) => [r, enc.encode('\n')]));
  for (const [path, body] of [['/bad-bytes.ndjson', joined], ['/bad-bytes.ndjson.gz', gzipSync(joined)]] as const) {
    for (const method of ['copy', 'insert']) {
      await server.sql`delete from patient where id like 'bytes%'`;
      const { status, body: answer } = await load({ source: sources.put(path, body), method });
      expect({ path, method, status }).toEqual({ path, method, status: 200 });
      expect(answer.Patient).toBe(994);
      expect(answer.errorCount).toBe(6);
      expect(answer.errors.map((e: { line: number }) => e.line)).toEqual([500, 600, 700, 800, 900, 950]);
      for (const e of answer.errors) expect(e.message).toContain(bad[e.line]!);
      expect((await server.sql`select count(*)::int as n from patient where id like 'bytes%'`)[0]!.n).toBe(994);
    }
  }
});

test('a source of random bytes is all bad lines: 200, nothing loaded, each reported', async () => {
  const before = await snapshot(server.sql, TYPES);
  const { status, body } = await load({ source: sources.put('/random.bin', crypto.getRandomValues(new Uint8Array(64 * 1024))) });
  expect(status).toBe(200);
  expect(body.errorCount).toBeGreaterThan(0);
  expect(await snapshot(server.sql, TYPES)).toEqual(before);
});

// A sizeable good prefix, so a failure happens after rows were already COPYed into staging.
const bigText = ndjson(many(3000));
const bigGzip = gzipSync(new TextEncoder().encode(bigText));

const failures: [string, () => Promise<string>, number, string][] = [
  ['connection refused', async () => `http://127.0.0.1:${await freePort()}/Patient.ndjson`, 502, 'unreachable'],
  ['HTTP 404', async () => sources.fail('/missing.ndjson', 404), 502, 'HTTP 404'],
  ['HTTP 500', async () => sources.fail('/broken.ndjson', 500), 502, 'HTTP 500'],
  ['a gzip cut off in the middle', async () => sources.put('/cut.ndjson.gz', bigGzip.subarray(0, Math.floor(bigGzip.length * 0.8))), 422, 'gzip'],
  ['a gzip missing only its trailer', async () => sources.put('/trailer.ndjson.gz', bigGzip.subarray(0, bigGzip.length - 4)), 422, 'gzip'],
  ['a connection dropped mid-body', async () => sources.cut('/dropped.ndjson', new TextEncoder().encode(bigText.slice(0, 100_000))), 502, 'dropped.ndjson'],
  ['gzip magic followed by garbage', async () => sources.put('/garbage.gz', new Uint8Array([0x1f, 0x8b, ...crypto.getRandomValues(new Uint8Array(4096))])), 422, 'garbage.gz'],
  ['an empty file', async () => sources.put('/empty.ndjson', ''), 422, 'empty'],
  ['a file of blank lines', async () => sources.put('/blank.ndjson', '\n\n  \r\n'), 422, 'empty'],
  ['an empty gzip', async () => sources.put('/empty.ndjson.gz', '', { gzip: true }), 422, 'empty'],
];

for (const [what, source, status, says] of failures) {
  // an HTTP 500 is tried three times (1 s and 2 s apart) per method: over 6 s before any load
  test(`source failure: ${what} → ${status}, message names the source, tables unchanged`, { timeout: 60_000 }, async () => {
    const url = await source();
    const name = url.split('/').pop()!;
    const before = await snapshot(server.sql, TYPES);
    for (const method of ['copy', 'insert']) {
      const { status: got, body } = await load({ source: url, method, update: true });
      expect({ what, got }).toEqual({ what, got: status });
      expect(body.resourceType).toBe('OperationOutcome');
      expect(body.message).toStartWith(`Cannot load "${name}": `);
      expect(body.message).toContain(says);
      expect(body.issue[0].diagnostics).toBe(body.message);
    }
    expect(await snapshot(server.sql, TYPES)).toEqual(before);
  });
}

test('file:// sources outside FHIRHOSE_IMPORT_ROOT are 403: "..", a symlink out, an absolute path elsewhere', async () => {
  const secret = path.join(outside, 'secret.ndjson');
  fs.writeFileSync(secret, ndjson(many(2)));
  fs.symlinkSync(secret, path.join(server.importRoot, 'link.ndjson'));
  fs.symlinkSync(outside, path.join(server.importRoot, 'dir-link'));
  const relative = path.relative(server.importRoot, secret);
  const before = await snapshot(server.sql, TYPES);
  for (const source of [
    `file://${server.importRoot}/${relative}`,
    `file://${path.join(server.importRoot, 'link.ndjson')}`,
    `file://${path.join(server.importRoot, 'dir-link', 'secret.ndjson')}`,
    `file://${secret}`,
    secret,
    'file:///etc/passwd',
    `file://${server.importRoot}/../${path.basename(outside)}/nothing-here.ndjson`,
  ]) {
    const { status, body } = await load({ source });
    expect({ source, status }).toEqual({ source, status: 403 });
    expect(body.message).toContain('outside FHIRHOSE_IMPORT_ROOT');
  }
  expect(await snapshot(server.sql, TYPES)).toEqual(before);
});

test('a missing file under the import root is 404; other schemes are 400', async () => {
  expect((await load({ source: `file://${server.importRoot}/nope.ndjson` })).status).toBe(404);
  expect((await load({ source: 'ftp://example.org/Patient.ndjson' })).status).toBe(400);
});

test('a symlink that stays inside the import root is followed', async () => {
  const real = path.join(server.importRoot, 'real.ndjson');
  fs.writeFileSync(real, ndjson(many(3, 100)));
  fs.symlinkSync(real, path.join(server.importRoot, 'alias.ndjson'));
  expect((await load({ source: `file://${path.join(server.importRoot, 'alias.ndjson')}` })).body).toEqual({ Patient: 3 });
});

test('unauthenticated $load is 401 and loads nothing', async () => {
  const res = await server.request('/$load', { method: 'POST', json: { source: sources.put('/anon.ndjson', ndjson(many(1, 500))) }, auth: null });
  expect(res.status).toBe(401);
  expect((await server.sql`select count(*)::int as n from patient where id = 'new500'`)[0]!.n).toBe(0);
});

test('a client that disconnects mid-load cancels it: nothing is written and the source is let go', { timeout: 90_000 }, async () => {
  const before = await snapshot(server.sql, TYPES);
  let cancelled = false;
  let served = 0;
  const trickle = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: () => new Response(new ReadableStream<Uint8Array>({
      async pull(controller) {
        await Bun.sleep(20); // an endless source that trickles
        controller.enqueue(new TextEncoder().encode(ndjson(many(50, Math.floor(Math.random() * 1e6)))));
        served++;
      },
      cancel() { cancelled = true; },
    })),
  });
  try {
    const client = new AbortController();
    const pending = server.request('/$load', { method: 'POST', json: { source: `http://127.0.0.1:${trickle.port}/endless.ndjson` }, signal: client.signal });
    // disconnect once the load is reading its source, however long the request took to get there
    await within(30_000, () => served >= 5, 'the load reading its source');
    client.abort();
    await pending.catch(() => {});
    await within(30_000, () => cancelled, 'the source let go');
    expect(await snapshot(server.sql, TYPES)).toEqual(before);
  } finally {
    trickle.stop(true);
  }
});

test('a client that disconnects during a file load cancels it too', { timeout: 60_000 }, async () => {
  const file = path.join(server.importRoot, 'big.ndjson');
  fs.writeFileSync(file, ndjson(many(1_500_000, 10_000_000))); // several seconds of COPY, so the abort lands inside it
  const before = await snapshot(server.sql, TYPES);
  await (await server.request('/metadata')).arrayBuffer();
  const client = new AbortController();
  const pending = server.request('/$load', { method: 'POST', json: { source: `file://${file}` }, signal: client.signal });
  // Disconnect once the load is working in the database (its COPY or its merge): a fixed sleep
  // raced the request's arrival on a loaded machine. Either way the transaction must roll back.
  let working = false;
  for (const until = Date.now() + 20_000; !working && Date.now() < until; ) {
    const [row] = await server.sql`select count(*)::int as n from pg_stat_activity where application_name in ('fhirhose', 'fhirhose bulk') and state = 'active' and (query ilike 'copy %' or query ilike 'insert %') and pid <> pg_backend_pid()`;
    working = row!.n > 0;
    if (!working) await Bun.sleep(25);
  }
  expect(working).toBe(true);
  client.abort();
  await pending.catch(() => {});
  // The load's connection is released once the transaction is rolled back.
  for (let i = 0; i < 100; i++) {
    const [busy] = await server.sql`select count(*)::int as n from pg_stat_activity where application_name in ('fhirhose', 'fhirhose bulk') and state <> 'idle' and pid <> pg_backend_pid()`;
    if (busy!.n === 0) break;
    await Bun.sleep(100);
  }
  expect(await snapshot(server.sql, TYPES)).toEqual(before);
});

test('no scratch staging table is left behind by loads that succeeded or failed', async () => {
  const [left] = await server.sql`select count(*)::int as n from pg_class where relname like '\_fhirhose\_stage\_%'`;
  expect(left!.n).toBe(0);
});
