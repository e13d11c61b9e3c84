/**
 * Ping and pull (SPEC §13 `exportType: dynamic`) against a local Bulk Data server that behaves
 * like real ones do: several 202s with Retry-After (seconds and an HTTP date), a 429, a 503, a
 * manifest in two `link` pages, a file that breaks off half-way, a `deleted` file; one whose
 * export fails; one that refuses the credentials and echoes them back.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { within } from '../helpers/wait.ts';

const USER_PASSWORD = 'puller:s3cret-of-the-other-server';
const AUTH = 'Basic ' + Buffer.from(USER_PASSWORD).toString('base64');

let server: TestServer;
let other: ReturnType<typeof Bun.serve>;
const seen: { method: string; path: string; authorization: string | null; prefer: string | null; accept: string | null }[] = [];
const kickoffs = new Map<string, number>();
const gets = new Map<string, number>();
let busyPolls = 0;
const posted: unknown[] = [];

const patients = Array.from({ length: 500 }, (_, i) => JSON.stringify({ resourceType: 'Patient', id: `pull-${i}`, name: [{ family: `F${i}` }] })).join('\n') + '\n';
const observations = Array.from({ length: 400 }, (_, i) => JSON.stringify({
  resourceType: 'Observation', id: `obs-${i}`, status: 'final', code: { text: `c${i}` }, subject: { reference: `Patient/pull-${i % 500}` },
})).join('\n') + '\n';
const deletes = ['pull-3', 'pull-4', 'old-1'].map((id, i) => JSON.stringify({
  resourceType: 'Bundle', id: `d${i}`, type: 'transaction', entry: [{ request: { method: 'DELETE', url: `Patient/${id}` } }],
})).join('\n') + '\n';

function outcome(status: number, code: string, diagnostics: string): Response {
  return Response.json({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] }, { status });
}

beforeAll(async () => {
  other = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    development: false,
    fetch(req) {
      const url = new URL(req.url);
      const path = url.pathname;
      const authorization = req.headers.get('authorization');
      seen.push({ method: req.method, path, authorization, prefer: req.headers.get('prefer'), accept: req.headers.get('accept') });
      const base = `http://127.0.0.1:${other.port}`;
      if (authorization !== AUTH && !path.startsWith('/open/')) {
        // a careless server that echoes what it got: the pull must not store or show it
        return outcome(401, 'login', `Authorization ${authorization ?? '(none)'} is not valid here`);
      }
      if (path === '/postonly/$export') {
        // refuses GET; busy once; then takes the Parameters body
        if (req.method === 'GET') return outcome(405, 'not-supported', 'use POST');
        kickoffs.set(path, (kickoffs.get(path) ?? 0) + 1);
        if (kickoffs.get(path) === 1) return new Response('busy', { status: 429, headers: { 'retry-after': '1' } });
        return req.json().then((body) => {
          posted.push(body);
          return new Response(null, { status: 202, headers: { 'content-location': `${base}/failing/status` } });
        });
      }
      if (path.endsWith('/$export') && req.method === 'GET') {
        kickoffs.set(path, (kickoffs.get(path) ?? 0) + 1);
        const job = path.split('/')[1];
        // a status URL on another host than the kick-off: outside FHIRHOSE_SOURCE_ALLOW
        const at = job === 'elsewhere' ? `http://localhost:${other.port}` : base;
        return new Response(null, { status: 202, headers: { 'content-location': `${at}/${job}/status` } });
      }
      if (req.method === 'DELETE') return new Response(null, { status: 202 });
      if (path === '/busy/status') {
        busyPolls++;
        const step = busyPolls;
        if (step === 1) return new Response(null, { status: 202, headers: { 'retry-after': '1', 'x-progress': '10% (started)' } });
        if (step === 2) return new Response(null, { status: 202, headers: { 'retry-after': new Date(Date.now() + 1500).toUTCString(), 'x-progress': '40%' } });
        if (step === 3) return new Response(null, { status: 202, headers: { 'retry-after': '1', 'x-progress': '80%' } });
        if (step === 4) return new Response('slow down', { status: 429, headers: { 'retry-after': '1' } });
        if (step === 5) return new Response('<html>bad gateway</html>', { status: 503 });
        return Response.json({
          transactionTime: '2026-12-01T20:00:00.000Z', request: `${base}/busy/$export`, requiresAccessToken: true,
          output: [{ type: 'Patient', url: `${base}/busy/files/Patient.ndjson`, count: 500 }],
          error: [], link: [{ relation: 'next', url: `${base}/busy/status/page/2` }],
        });
      }
      if (path === '/busy/status/page/2') {
        return Response.json({
          transactionTime: '2026-12-01T20:00:00.000Z', request: `${base}/busy/$export`, requiresAccessToken: true,
          output: [{ type: 'Observation', url: `${base}/busy/files/Observation.ndjson`, count: 400 }],
          deleted: [{ type: 'Bundle', url: `${base}/busy/files/deleted.ndjson`, count: 3 }],
          error: [],
        });
      }
      if (path === '/failing/status') return outcome(500, 'exception', 'the export ran out of disk space');
      if (path.startsWith('/busy/files/') && req.method === 'GET') {
        gets.set(path, (gets.get(path) ?? 0) + 1);
        const body = path.endsWith('Patient.ndjson') ? patients : path.endsWith('Observation.ndjson') ? observations : deletes;
        if (path.endsWith('Observation.ndjson') && gets.get(path) === 1) return breakOff(body, Math.floor(body.length / 2));
        return new Response(body);
      }
      if (path.startsWith('/busy/files/')) return new Response(null, { status: 200 });
      return new Response('not here', { status: 404 });
    },
  });
  server = await startTestServer({ FHIRHOSE_IMPORT_BATCH_LINES: '100', FHIRHOSE_SOURCE_ALLOW: `http://127.0.0.1:${other.port}/` });
  // a resource the pull's deleted file names: it must go, with its history kept
  expect((await server.request('/Patient/old-1', { method: 'PUT', json: { resourceType: 'Patient', id: 'old-1' } })).status).toBe(201);
}, 60_000);
afterAll(async () => { other.stop(true); await server.stop(); });

/** Sends the first `cut` bytes in small pieces, then breaks the connection. */
function breakOff(body: string, cut: number): Response {
  const bytes = new TextEncoder().encode(body);
  let sent = 0;
  return new Response(new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent >= cut) return controller.error(new Error('connection dropped on purpose'));
      const end = Math.min(cut, sent + 4096);
      controller.enqueue(bytes.subarray(sent, end));
      sent = end;
      await Bun.sleep(5);
    },
  }), { headers: { 'content-length': String(bytes.length) } });
}

const url = (path: string) => `http://127.0.0.1:${other.port}${path}`;

function pull(exportUrl: string, credential = USER_PASSWORD) {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'exportUrl', valueUrl: exportUrl },
      { name: 'storageDetail', part: [{ name: 'type', valueCode: 'https' }, { name: 'credentialHttpBasic', valueString: credential }] },
    ],
  };
}

/** Starts the pull; polls its status URL until 200, collecting the X-Progress headers seen. */
async function run(body: unknown): Promise<{ done: Record<string, any>; progress: string[]; id: string }> {
  const res = await server.request('/$import', { method: 'POST', json: body });
  expect(res.status).toBe(202);
  const path = res.headers.get('content-location')!.slice(server.url.length);
  const progress: string[] = [];
  let done: Record<string, any> | undefined;
  await within(90_000, async () => {
    const status = await server.request(path);
    if (status.status === 202) {
      progress.push(status.headers.get('x-progress')!);
      await status.body?.cancel();
      return false;
    }
    done = (await status.json()) as Record<string, any>;
    return true;
  }, () => `the end of the pull (last progress: ${progress.at(-1)})`);
  return { done: done!, progress, id: path.split('/').pop()! };
}

test('a dynamic pull waits out 202s, a 429 and a 503, reads both manifest pages, re-reads a file that broke off, applies the deletes last', async () => {
  const { done, progress, id } = await run(pull(url('/busy/$export')));
  expect(done.extension.status).toBe('done');
  expect(kickoffs.get('/busy/$export')).toBe(1);
  expect(busyPolls).toBe(6);
  // the kick-off as the IG asks, with the credential; the other server's progress was shown
  const kick = seen.find((r) => r.path === '/busy/$export')!;
  expect(kick).toMatchObject({ method: 'GET', authorization: AUTH, prefer: 'respond-async', accept: 'application/fhir+json' });
  expect(progress.some((p) => /^0% waiting for the export at http:\/\/127\.0\.0\.1:\d+ \(polling: (10% \(started\)|40%|80%)\)$/.test(p))).toBe(true);
  expect(done.transactionTime).toBe('2026-12-01T20:00:00.000Z');
  expect(done.output).toEqual([
    { type: 'Patient', count: 500, url: url('/busy/files/Patient.ndjson') },
    { type: 'Observation', count: 400, url: url('/busy/files/Observation.ndjson') },
  ]);
  // pull-3 and pull-4 were imported, then deleted; old-1 was there before; all three counted
  expect(done.deleted).toEqual([{ type: 'Bundle', count: 3, url: url('/busy/files/deleted.ndjson') }]);
  expect(done.error).toEqual([]);
  expect(gets.get('/busy/files/Observation.ndjson')).toBe(2);
  expect(done.extension.inputs.map((i: Record<string, any>) => [i.checkpoint, i.imported, i.status])).toEqual([[500, 500, 'done'], [400, 400, 'done'], [3, 3, 'done']]);
  expect((await server.sql`select count(*)::int as n from patient where id like 'pull-%'`)[0]!.n).toBe(498);
  expect((await server.sql`select count(*)::int as n from observation where id like 'obs-%'`)[0]!.n).toBe(400);
  expect((await server.sql`select count(*)::int as n from patient where id in ('pull-3', 'pull-4', 'old-1')`)[0]!.n).toBe(0);
  const history = await server.sql`select id, status::text as status from patient_history where id in ('pull-3', 'old-1') order by id, txid`;
  expect(history.map((h) => `${h.id}:${h.status}`)).toEqual(['old-1:created', 'old-1:deleted', 'pull-3:created', 'pull-3:deleted']);
  // the export there is deleted once read, with the credential; the source's time is kept
  await within(10_000, () => seen.some((r) => r.method === 'DELETE' && r.path === '/busy/status' && r.authorization === AUTH), 'the DELETE of the remote export');
  expect(done.extension.pull).toMatchObject({ state: 'listed', transactionTime: '2026-12-01T20:00:00.000Z', requiresAccessToken: true });
  // the credential is gone with the session, and was never part of it
  expect((await server.sql`select count(*)::int as n from bulkimport_credential where session_id = ${id}`)[0]!.n).toBe(0);
  expect(JSON.stringify(done)).not.toContain(AUTH.slice(6));
}, 180_000);

test('a remote export that fails → the session fails with its message', async () => {
  const { done } = await run(pull(url('/failing/$export')));
  expect(done.extension.status).toBe('error');
  expect(done.extension.message).toContain('HTTP 500');
  expect(done.extension.message).toContain('the export ran out of disk space');
  expect(done.error).toEqual([expect.objectContaining({ message: done.extension.message })]);
  expect(kickoffs.get('/failing/$export')).toBe(1);
}, 90_000);

test('wrong credentials → a clear error naming the status, and no secret anywhere', async () => {
  const wrong = 'puller:not-the-password-at-all';
  const { done, id } = await run(pull(url('/refusing/$export'), wrong));
  expect(done.extension.status).toBe('error');
  expect(done.extension.message).toContain('HTTP 401');
  expect(done.extension.message).toContain('refused the credentials');
  const wrongAuth = Buffer.from(wrong).toString('base64');
  for (const text of [JSON.stringify(done), JSON.stringify(await server.sql`select * from bulkimportstatus where id = ${id}`), JSON.stringify(await server.sql`select * from fhirhose_job where grp = ${id}`)]) {
    expect(text).not.toContain(wrongAuth);
    expect(text).not.toContain('not-the-password-at-all');
  }
  expect(kickoffs.get('/refusing/$export')).toBeUndefined();
}, 90_000);

test('FHIRHOSE_SOURCE_ALLOW applies to the status URL the other server hands back', async () => {
  const { done } = await run(pull(url('/elsewhere/$export')));
  expect(done.extension.status).toBe('error');
  expect(done.extension.message).toContain('FHIRHOSE_SOURCE_ALLOW');
  expect(done.extension.message).toContain(`http://localhost:${other.port}/elsewhere/status`);
  expect(seen.some((r) => r.path === '/elsewhere/status')).toBe(false);
}, 90_000);

test('malformed pulls are a 400 naming the parameter, with no credential echoed; nothing is created', async () => {
  const before = (await server.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n;
  const withParams = (exportUrl: string, extra: Record<string, unknown>[]) => ({ resourceType: 'Parameters', parameter: [{ name: 'exportUrl', valueUrl: exportUrl }, ...extra] });
  const cases: [unknown, string][] = [
    [withParams(url('/busy/$export'), [{ name: '_since', valueString: 'yesterday' }]), '"_since" "yesterday" must be an instant'],
    [withParams(url('/busy/$export?_type=Patient'), [{ name: '_type', valueString: 'Observation' }]), '"_type" is given both in "exportUrl" and as a parameter'],
    [withParams(url('/busy/$export'), [{ name: '_until', valueString: '2026-01-01T00:00:00Z' }, { name: '_until', valueString: '2026-01-02T00:00:00Z' }]), '"_until" is given twice'],
    [withParams(`http://puller:hunter2-secret@127.0.0.1:${other.port}/busy/$export`, []), 'must not carry credentials'],
    [withParams(url('/busy/$export'), [{ name: 'exportType', valueCode: 'sometimes' }]), '"exportType" "sometimes" must be static or dynamic'],
    [{ resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Patient' }, { name: 'input', part: [{ name: 'url', valueUri: url('/x.ndjson') }] }] }, 'needs "exportUrl"'],
  ];
  for (const [body, message] of cases) {
    const res = await server.request('/$import', { method: 'POST', json: body });
    const text = await res.text();
    const diagnostics = (JSON.parse(text) as { issue: { diagnostics: string }[] }).issue[0]!.diagnostics;
    expect({ status: res.status, diagnostics }).toEqual({ status: 400, diagnostics: expect.stringContaining(message) });
    expect(text).not.toContain('hunter2-secret');
  }
  expect((await server.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n).toBe(before);
});

test('a server that refuses GET (405) and is busy once (429) gets the kick-off as a POST of Parameters, passed through', async () => {
  const body = pull(url('/postonly/$export'));
  body.parameter.push(
    { name: '_type', valueString: 'Patient,Observation' } as never,
    { name: '_since', valueString: '2026-11-30T00:00:00Z' } as never,
    { name: '_typeFilter', valueString: 'Patient?_id=a' } as never,
    { name: '_typeFilter', valueString: 'Observation?_id=b' } as never,
  );
  const { done } = await run(body);
  // that export then fails there: what matters here is how it was asked for
  expect(done.extension.status).toBe('error');
  expect(kickoffs.get('/postonly/$export')).toBe(2);
  expect(posted).toEqual([{
    resourceType: 'Parameters',
    parameter: [
      { name: '_type', valueString: 'Patient,Observation' },
      { name: '_since', valueInstant: '2026-11-30T00:00:00Z' },
      { name: '_typeFilter', valueString: 'Patient?_id=a' },
      { name: '_typeFilter', valueString: 'Observation?_id=b' },
    ],
  }]);
  expect(done.extension.pull.since).toBe('2026-11-30T00:00:00Z');
}, 90_000);
