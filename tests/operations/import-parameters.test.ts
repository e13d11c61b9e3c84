import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { within } from '../helpers/wait.ts';

const USER = 'hapi-user';
const PASSWORD = 'pa55-w0rd-never-shown';
const EXPECTED = 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64');

let server: TestServer;
const logLines: string[] = [];
/** The source: requires Basic credentials under /private/, answers 429 then 503 once under /flaky/. */
let source: ReturnType<typeof Bun.serve>;
/** Another origin, only reached by a redirect: it must never see the credentials. */
let elsewhere: ReturnType<typeof Bun.serve>;
const seen: { path: string; authorization: string | null; origin: 'source' | 'elsewhere' }[] = [];
const hits = new Map<string, number>();
let releaseStall!: () => void;
const stalled = new Promise<void>((resolve) => { releaseStall = resolve; });

const lines = (type: string, prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ resourceType: type, id: `${prefix}${i}` })).join('\n') + '\n';

beforeAll(async () => {
  server = await startTestServer({}, { log: (line) => logLines.push(line) });
  elsewhere = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch(req) {
      seen.push({ path: new URL(req.url).pathname, authorization: req.headers.get('authorization'), origin: 'elsewhere' });
      return new Response(lines('Patient', 'moved', 4));
    },
  });
  source = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch(req) {
      const path = new URL(req.url).pathname;
      const authorization = req.headers.get('authorization');
      seen.push({ path, authorization, origin: 'source' });
      if (req.method === 'HEAD') return new Response(null, { status: 405 });
      const n = (hits.get(path) ?? 0) + 1;
      hits.set(path, n);
      if (path.startsWith('/private/') && authorization !== EXPECTED) return new Response('who are you', { status: 401 });
      if (path === '/flaky/Patient.ndjson' && n === 1) return new Response('slow down', { status: 429, headers: { 'Retry-After': '1' } });
      if (path === '/flaky/Patient.ndjson' && n === 2) return new Response('oops', { status: 503 });
      if (path.startsWith('/stall/')) {
        // some lines, then nothing until the test ends: the import stays running
        return new Response(new ReadableStream({
          async start(controller) {
            controller.enqueue(new TextEncoder().encode(lines('Patient', 'stall-', 5)));
            await stalled;
            controller.close();
          },
        }));
      }
      if (path === '/private/redirect.ndjson') return Response.redirect(`http://127.0.0.1:${elsewhere.port}/moved.ndjson`, 302);
      const [, , file] = path.split('/');
      const type = file!.split('.')[0]!;
      return new Response(lines(type, `${path.split('/')[1]}-${type}-`, type === 'Patient' ? 20 : 7));
    },
  });
});
afterAll(async () => { releaseStall(); source.stop(true); elsewhere.stop(true); await server.stop(); });

const url = (path: string) => `http://127.0.0.1:${source.port}${path}`;

function parameters(inputs: [string, string][], storage?: Record<string, string>): Record<string, unknown> {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'inputFormat', valueCode: 'application/fhir+ndjson' },
      { name: 'inputSource', valueUri: 'http://example.org/source' },
      ...(storage ? [{ name: 'storageDetail', part: Object.entries(storage).map(([name, value]) => ({ name, valueString: value })) }] : []),
      { name: 'mode', valueCode: 'InitialLoad' },
      ...inputs.map(([type, u]) => ({ name: 'input', part: [{ name: 'type', valueCode: type }, { name: 'url', valueUri: u }] })),
    ],
  };
}

async function kickOff(body: unknown): Promise<string> {
  const res = await server.request('/$import', { method: 'POST', json: body, headers: { 'content-type': 'application/fhir+json' } });
  expect(res.status).toBe(202);
  const location = res.headers.get('content-location')!;
  expect(location).toStartWith(server.url + '/$import-status/');
  return location;
}

/** Polls the status URL as a Bulk Data client does; returns the final answer and the 202s seen. */
async function poll(location: string): Promise<{ status: number; body: Record<string, any>; running: Headers[] }> {
  const running: Headers[] = [];
  let final: { status: number; body: Record<string, any> } | undefined;
  await within(60_000, async () => {
    const res = await server.request(location.slice(server.url.length));
    if (res.status === 202) {
      running.push(res.headers);
      await res.body?.cancel();
      return false;
    }
    final = { status: res.status, body: (await res.json()) as Record<string, any> };
    return true;
  }, 'the end of the import');
  return { ...final!, running };
}

test('a HAPI-shaped Parameters import with Basic credentials: 202, progress, then a manifest of counts per type', async () => {
  const location = await kickOff(parameters([['Patient', url('/private/Patient.ndjson')], ['Observation', url('/private/Observation.ndjson')]],
    { type: 'https', credentialHttpBasic: `${USER}:${PASSWORD}` }));
  const { status, body, running } = await poll(location);
  for (const headers of running) {
    expect(headers.get('x-progress')).toMatch(/^\d{1,3}%/);
    const retry = Number(headers.get('retry-after'));
    expect(Number.isInteger(retry) && retry >= 1 && retry <= 60).toBe(true);
  }
  expect(status).toBe(200);
  expect(body.output).toEqual([
    { type: 'Patient', count: 20, url: url('/private/Patient.ndjson') },
    { type: 'Observation', count: 7, url: url('/private/Observation.ndjson') },
  ]);
  expect(body.error).toEqual([]);
  expect(body.outcome).toEqual([]);
  expect(body.requiresAccessToken).toBe(false);
  expect(typeof body.transactionTime).toBe('string');
  expect(body.extension.resourceType).toBe('BulkImportStatus');
  expect(body.extension.status).toBe('done');
  expect((await server.sql`select count(*)::int as n from patient where id like 'private-Patient-%'`)[0]!.n).toBe(20);
  // the same session, as the Aidbox view, and the credential is nowhere to be seen
  const id = location.split('/').pop()!;
  const view = await server.request(`/BulkImportStatus/${id}`);
  expect(view.status).toBe(200);
  const text = await view.text();
  expect(logLines.some((line) => line.includes(id))).toBe(true); // the log is really collected
  for (const shown of [text, JSON.stringify(body), logLines.join('\n')]) {
    expect(shown).not.toContain(PASSWORD);
    expect(shown).not.toContain(EXPECTED.slice(6));
  }
  // stored only while needed: gone once the session is done
  expect((await server.sql`select count(*)::int as n from bulkimport_credential where session_id = ${id}`)[0]!.n).toBe(0);
  const stored = await server.sql`select resource::text as r from bulkimportstatus where id = ${id}`;
  expect(stored[0]!.r).not.toContain(PASSWORD);
});

test('without the credentials the source answers 401 and the input fails with a clear message', async () => {
  const location = await kickOff(parameters([['Patient', url('/private/Patient.ndjson')]]));
  const { status, body } = await poll(location);
  expect(status).toBe(200);
  expect(body.extension.status).toBe('error');
  expect(body.output).toEqual([{ type: 'Patient', count: 0, url: url('/private/Patient.ndjson') }]);
  expect(body.error).toHaveLength(1);
  expect(body.error[0].message).toContain('answered HTTP 401');
  expect(body.error[0].message).toContain('credentialHttpBasic');
  expect(body.outcome).toEqual(body.error);
});

test('the credentials go to the inputs\' origin only, never to a host a redirect leads to', async () => {
  const location = await kickOff(parameters([['Patient', url('/private/redirect.ndjson')]], { credentialHttpBasic: `${USER}:${PASSWORD}` }));
  const { body } = await poll(location);
  expect(body.output[0].count).toBe(4);
  const atElsewhere = seen.filter((s) => s.origin === 'elsewhere');
  expect(atElsewhere.length).toBeGreaterThan(0);
  expect(atElsewhere.every((s) => s.authorization === null)).toBe(true);
  expect(seen.some((s) => s.path === '/private/redirect.ndjson' && s.authorization === EXPECTED)).toBe(true);
});

test('a source answering 429 with Retry-After, then 503 once, is asked again and imported exactly', async () => {
  const location = await kickOff(parameters([['Patient', url('/flaky/Patient.ndjson')]]));
  const { body } = await poll(location);
  expect(body.extension.status).toBe('done');
  expect(body.output).toEqual([{ type: 'Patient', count: 20, url: url('/flaky/Patient.ndjson') }]);
  expect(hits.get('/flaky/Patient.ndjson')).toBe(3);
  expect((await server.sql`select count(*)::int as n from patient where id like 'flaky-Patient-%'`)[0]!.n).toBe(20);
});

test('DELETE on the status URL aborts the import; the status URL is then 404, the session still readable', async () => {
  const location = await kickOff(parameters([['Patient', url('/stall/Patient.ndjson')]]));
  const path = location.slice(server.url.length);
  const id = location.split('/').pop()!;
  // running: the source sent some lines and then nothing
  await within(30_000, async () => (await server.sql`select count(*)::int as n from bulkimport_input where session_id = ${id} and bytes_read > 0`)[0]!.n === 1, 'the first bytes read');
  const running = await server.request(path);
  expect(running.status).toBe(202);
  expect(running.headers.get('x-progress')).toMatch(/^\d{1,3}%/);
  const del = await server.request(path, { method: 'DELETE' });
  expect(del.status).toBe(202);
  expect((await server.request(path)).status).toBe(404);
  const view = await (await server.request(`/BulkImportStatus/${id}`)).json() as Record<string, any>;
  expect(view.status).toBe('aborted');
  expect((await server.sql`select count(*)::int as n from patient where id like 'stall-%'`)[0]!.n).toBe(0);
  expect((await server.request('/$import-status/no-such-import')).status).toBe(404);
});

test('malformed Parameters are a 400 naming the parameter or part; nothing is created', async () => {
  const before = (await server.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n;
  const cases: [unknown, string][] = [
    [{ resourceType: 'Parameters' }, '"parameter" must be a non-empty array'],
    [parameters([]), 'at least one "input"'],
    [{ resourceType: 'Parameters', parameter: [{ name: 'input', part: [{ name: 'type', valueCode: 'Patient' }] }] }, 'parameter[0] "input": part "url" is required'],
    [parameters([['Spaceship', url('/x.ndjson')]]), 'part "type" "Spaceship" is not a FHIR R4 resource type'],
    [parameters([['Patient', 'ftp://example.org/x.ndjson']]), 'part "url" "ftp://example.org/x.ndjson" must be an http(s):// URL'],
    [parameters([['Patient', url('/x.ndjson')]], { type: 'azure-blob' }), 'part "type" "azure-blob" is not supported'],
    [parameters([['Patient', url('/x.ndjson')]], { credentialHttpBasic: 'no-colon-secret' }), 'part "credentialHttpBasic" must be a string "user:password"'],
    [{ resourceType: 'Parameters', parameter: [{ name: 'inputFormat', valueCode: 'text/csv' }, { name: 'input', part: [{ name: 'url', valueUri: url('/x') }] }] }, 'inputFormat must be one of'],
    [{ resourceType: 'Parameters', parameter: [{ name: 'colour', valueString: 'blue' }] }, 'parameter[0] "colour" is not a parameter of $import'],
  ];
  for (const [body, message] of cases) {
    const res = await server.request('/$import', { method: 'POST', json: body });
    const outcome = (await res.json()) as Record<string, any>;
    expect({ status: res.status, message: outcome.issue[0].diagnostics }).toEqual({ status: 400, message: expect.stringContaining(message) });
    expect(outcome.issue[0].diagnostics).not.toContain('no-colon-secret');
  }
  expect((await server.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n).toBe(before);
});

test('the Aidbox body keeps answering 201', async () => {
  const res = await server.request('/$import', { method: 'POST', json: { id: 'aidbox-style', inputs: [{ resourceType: 'Patient', url: url('/aidbox/Patient.ndjson') }] } });
  expect(res.status).toBe(201);
  expect(res.headers.get('content-location')).toBe('/BulkImportStatus/aidbox-style');
});

test('status and DELETE need credentials like any route', async () => {
  const res = await server.request('/$import-status/anything', { auth: null });
  expect(res.status).toBe(401);
  const del = await server.request('/$import-status/anything', { method: 'DELETE', auth: 'Basic ' + btoa('root:wrong') });
  expect(del.status).toBe(401);
});

test('FHIRHOSE_SOURCE_ALLOW applies to the inputs: one outside it is a 403 and no session', async () => {
  const confined = await startTestServer({ FHIRHOSE_SOURCE_ALLOW: 'http://127.0.0.1:1/only/' });
  try {
    const res = await confined.request('/$import', { method: 'POST', json: parameters([['Patient', url('/private/Patient.ndjson')]], { credentialHttpBasic: `${USER}:${PASSWORD}` }) });
    const outcome = (await res.json()) as Record<string, any>;
    expect(res.status).toBe(403);
    expect(outcome.issue[0].diagnostics).toContain('FHIRHOSE_SOURCE_ALLOW');
    expect(outcome.issue[0].diagnostics).not.toContain(PASSWORD);
    expect((await confined.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n).toBe(0);
  } finally {
    await confined.stop();
  }
});
