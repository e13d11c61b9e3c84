import { afterAll, beforeAll, expect, test } from 'bun:test';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import { basic, startTestServer, ROOT_SECRET, type TestServer } from '../helpers/server.ts';
import { within } from '../helpers/wait.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_MAX_SOURCE_BYTES: String(256 * 1024), FHIRHOSE_SOURCE_STALL_TIMEOUT: '3' });
});
afterAll(async () => { await server.stop(); });

const NDJSON = { 'content-type': 'application/fhir+ndjson' };
const patients = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ resourceType: 'Patient', id: `${prefix}${i}`, gender: 'female' })).join('\n') + '\n';

async function upload(pathname: string, body: BodyInit, headers: Record<string, string> = NDJSON, auth?: string) {
  const res = await server.request(pathname, { method: 'POST', body, headers, ...(auth ? { auth } : {}) });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function countLike(prefix: string): Promise<number> {
  return (await server.sql`select count(*)::int as n from patient where id like ${prefix + '%'}`)[0]!.n;
}

test('a plain ndjson body is loaded, per type on /$load and as total on /<Type>/$load', async () => {
  const mixed = patients('plain', 30) + JSON.stringify({ resourceType: 'Organization', id: 'up-org', name: 'Up' }) + '\n';
  expect(await upload('/$load', mixed)).toEqual({ status: 200, body: { Patient: 30, Organization: 1 } });
  expect(await countLike('plain')).toBe(30);
  // every accepted Content-Type, lines without resourceType on the typed route
  const typed = Array.from({ length: 5 }, (_, i) => JSON.stringify({ id: `typed${i}` })).join('\n');
  for (const type of ['application/x-ndjson', 'application/ndjson; charset=utf-8']) {
    expect(await upload('/Patient/$load', typed, { 'content-type': type })).toEqual({ status: 200, body: { total: 5 } });
  }
  expect(await upload('/fhir/Patient/$load', typed)).toEqual({ status: 200, body: { total: 5 } });
  expect(await countLike('typed')).toBe(5);
});

test('a gzip body loads whether Content-Encoding says so or only the bytes do', async () => {
  const gz = gzipSync(patients('gzhdr', 40));
  expect(await upload('/Patient/$load', gz, { ...NDJSON, 'content-encoding': 'gzip' })).toEqual({ status: 200, body: { total: 40 } });
  expect(await upload('/Patient/$load', gzipSync(patients('gzsniff', 25)))).toEqual({ status: 200, body: { total: 25 } });
  expect(await countLike('gzhdr')).toBe(40);
  expect(await countLike('gzsniff')).toBe(25);
});

test('bad lines are skipped and reported with their line numbers; the rest loads', async () => {
  const text = [
    JSON.stringify({ resourceType: 'Patient', id: 'badl1' }),
    '{"resourceType": "Patient", "id": "broken"',
    JSON.stringify({ resourceType: 'Observation', id: 'o1', status: 'final' }),
    JSON.stringify({ resourceType: 'Patient' }),
    JSON.stringify({ resourceType: 'Patient', id: 'badl2' }),
  ].join('\n');
  const { status, body } = await upload('/Patient/$load', text);
  expect(status).toBe(200);
  expect(body.total).toBe(2);
  expect(body.errorCount).toBe(3);
  expect(body.errors.map((e: { line: number }) => e.line)).toEqual([2, 3, 4]);
  expect(body.errors[1].message).toBe('resourceType "Observation" does not match the URL\'s type "Patient"');
  expect(body.errors[2].message).toBe('id is missing');
});

test('query parameters carry the options: update writes history, a bad value is a 400 naming it', async () => {
  const first = JSON.stringify({ resourceType: 'Patient', id: 'opt1', gender: 'male' });
  const second = JSON.stringify({ resourceType: 'Patient', id: 'opt1', gender: 'female' });
  expect((await upload('/$load?method=insert', first)).status).toBe(200);
  expect((await upload('/$load?update=true', second)).status).toBe(200);
  const history = await server.sql`select count(*)::int as n from patient_history where id = 'opt1'`;
  expect(history[0]!.n).toBe(1);
  const bad = await upload('/$load?method=fast', first);
  expect(bad.status).toBe(400);
  expect(bad.body.issue[0].diagnostics).toBe('Invalid $load request: method must be one of copy, insert');
  const unknown = await upload('/$load?sorce=x', first);
  expect(unknown.status).toBe(400);
  expect(unknown.body.issue[0].diagnostics).toContain('unknown query parameter "sorce"');
});

test('validation=on&checks=struct from the query validates the upload', async () => {
  const validated = await upload('/$load?validation=on&checks=struct', JSON.stringify({ resourceType: 'Patient', id: 'opt2', gender: 42 }));
  expect(validated.body.errorCount).toBe(1);
  expect(await countLike('opt2')).toBe(0);
}, 120_000); // the first validation compiles the R4 schema: seconds, more on a busy machine

test('wrong or missing credentials are a 401 and load nothing', async () => {
  const wrong = await upload('/Patient/$load', patients('nocred', 3), NDJSON, basic('root', 'not-' + ROOT_SECRET));
  expect(wrong.status).toBe(401);
  const res = await server.request('/Patient/$load', { method: 'POST', body: patients('nocred', 3), headers: NDJSON, auth: null });
  expect(res.status).toBe(401);
  expect(await countLike('nocred')).toBe(0);
});

test('a body over the expansion limit is refused with 413 and writes nothing, plain or gzip', async () => {
  const big = patients('huge', 5000); // ~ 300 kB > 256 kB
  const plain = await upload('/Patient/$load', big);
  expect(plain.status).toBe(413);
  expect(plain.body.issue[0].diagnostics).toContain('Patient upload');
  const gz = await upload('/Patient/$load', gzipSync(big), { ...NDJSON, 'content-encoding': 'gzip' });
  expect(gz.status).toBe(413);
  expect(await countLike('huge')).toBe(0);
});

test('an empty body, a corrupt gzip and an unknown Content-Encoding are clear errors', async () => {
  const empty = await upload('/Patient/$load', '');
  expect(empty.status).toBe(400);
  expect(empty.body.issue[0].diagnostics).toContain('empty');
  const truncated = gzipSync(patients('trunc', 50)).subarray(0, 200);
  const cut = await upload('/Patient/$load', truncated);
  expect(cut.status).toBe(422);
  expect(cut.body.issue[0].diagnostics).toContain('gzip');
  expect(await countLike('trunc')).toBe(0);
  const br = await upload('/Patient/$load', patients('br', 2), { ...NDJSON, 'content-encoding': 'br' });
  expect(br.status).toBe(415);
  expect(br.body.issue[0].diagnostics).toContain('"br"');
});

test('a client that disconnects mid-body writes nothing, and the server keeps serving others', async () => {
  const body = Buffer.from(patients('gone', 2000));
  const url = new URL(server.url);
  const socket = net.connect(Number(url.port), url.hostname);
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  socket.write(
    `POST /Patient/$load HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: ${basic('root', ROOT_SECRET)}\r\n` +
    `Content-Type: application/fhir+ndjson\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  socket.write(body.subarray(0, Math.floor(body.length / 2)));
  // the load has begun: its COPY into the staging table is running, fed by the half body
  const copying = () => server.sql`select count(*)::int as n from pg_stat_activity where query ilike 'copy %from stdin%' and state = 'active'`;
  await within(20_000, async () => (await copying())[0]!.n > 0, 'the COPY of the upload');
  socket.destroy();
  // meanwhile and after, another client is served
  expect(await upload('/Patient/$load', patients('other', 10))).toEqual({ status: 200, body: { total: 10 } });
  // the cut load's transaction ends (rolled back): no backend of it is left in a transaction
  await within(20_000, async () => (await copying())[0]!.n === 0, 'the end of the cut COPY');
  expect(await countLike('gone')).toBe(0);
  expect(await countLike('other')).toBe(10);
});

test('a client that stops sending mid-body is cut after the stall timeout with 504, and nothing is written', async () => {
  const body = Buffer.from(patients('stalled', 2000));
  const url = new URL(server.url);
  const socket = net.connect(Number(url.port), url.hostname);
  let answer = '';
  socket.on('data', (chunk) => { answer += chunk.toString(); });
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  socket.write(
    `POST /Patient/$load HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: ${basic('root', ROOT_SECRET)}\r\n` +
    `Content-Type: application/fhir+ndjson\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  socket.write(body.subarray(0, Math.floor(body.length / 2)));
  // FHIRHOSE_SOURCE_STALL_TIMEOUT is 3 s here; the rest of the body never comes
  await within(30_000, () => answer.includes('\r\n\r\n'), 'the answer to the stalled upload');
  socket.destroy();
  expect(answer).toStartWith('HTTP/1.1 504');
  expect(answer).toContain('FHIRHOSE_SOURCE_STALL_TIMEOUT');
  expect(await countLike('stalled')).toBe(0);
}, 60_000); // above the bound of its wait, so a late answer is reported by `within`, naming it

/** Sends the headers and half the body of an upload, then nothing; the socket stays open. */
async function stallUpload(target: TestServer, prefix: string) {
  const body = Buffer.from(patients(prefix, 2000));
  const url = new URL(target.url);
  const socket = net.connect(Number(url.port), url.hostname);
  const seen = { answer: '' };
  socket.on('data', (chunk) => { seen.answer += chunk.toString(); });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  socket.write(
    `POST /Patient/$load HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: ${basic('root', ROOT_SECRET)}\r\n` +
    `Content-Type: application/fhir+ndjson\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  socket.write(body.subarray(0, Math.floor(body.length / 2)));
  return { socket, seen };
}

test('stalled uploads whose clients keep their sockets open hold nothing: each is answered, others are served, the server stops in its grace', async () => {
  const own = await startTestServer({ FHIRHOSE_SOURCE_STALL_TIMEOUT: '1', FHIRHOSE_SHUTDOWN_GRACE_MS: '1000' });
  let stopped = false;
  try {
    const stalls = await Promise.all([stallUpload(own, 'held-a'), stallUpload(own, 'held-b'), stallUpload(own, 'held-c')]);
    for (const [i, s] of stalls.entries()) {
      await within(30_000, () => s.seen.answer.includes('\r\n\r\n'), () => `the answer to stalled upload ${i} (so far: ${JSON.stringify(s.seen.answer.slice(0, 40))})`);
      expect(s.seen.answer).toStartWith('HTTP/1.1 504');
    }
    // the sockets stay open: an ordinary read and an ordinary upload are served meanwhile
    expect((await own.request('/Patient?_count=1')).status).toBe(200);
    const res = await own.request('/Patient/$load', { method: 'POST', body: patients('held-ok', 5), headers: NDJSON });
    expect({ status: res.status, body: await res.json() }).toEqual({ status: 200, body: { total: 5 } });
    const [n] = await own.sql`select count(*)::int as n from patient where id like 'held-%' and id not like 'held-ok%'`;
    expect(n!.n).toBe(0);
    // the stop waits its grace (1 s) for nothing that is still running, then returns
    const t0 = performance.now();
    const stop = own.stop().then(() => { stopped = true; });
    await within(15_000, () => stopped, 'the stop of the server beside three open stalled sockets');
    await stop;
    expect(performance.now() - t0).toBeLessThan(15_000);
    for (const s of stalls) s.socket.destroy();
  } finally {
    if (!stopped) await own.stop().catch(() => {});
  }
}, 90_000);

test('curl -T uploads with PUT: accepted on both $load routes; a JSON body over PUT is a 415', async () => {
  const res = await server.request('/Patient/$load', { method: 'PUT', body: gzipSync(patients('put', 8)), headers: { ...NDJSON, 'content-encoding': 'gzip' } });
  expect({ status: res.status, body: await res.json() }).toEqual({ status: 200, body: { total: 8 } });
  const all = await server.request('/$load', { method: 'PUT', body: patients('putall', 3), headers: NDJSON });
  expect({ status: all.status, body: await all.json() }).toEqual({ status: 200, body: { Patient: 3 } });
  const json = await server.request('/$load', { method: 'PUT', json: { source: 'http://example.org/x.ndjson' } });
  expect(json.status).toBe(415);
  expect(await countLike('put')).toBe(11);
});
