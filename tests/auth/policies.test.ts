/** SPEC §3: AccessPolicy engines allow and matcho, linked or global; 403 when nothing allows. */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { addClient, clearPolicies, putResources, type TestClient } from '../helpers/clients.ts';

let server: TestServer;
let alice: TestClient;
let bob: TestClient;
beforeAll(async () => {
  server = await startTestServer();
  alice = await addClient(server, 'alice');
  bob = await addClient(server, 'bob');
  await putResources(server, [{ resourceType: 'Patient', id: 'p1' }, { resourceType: 'Observation', id: 'o1', status: 'final', code: {} }]);
});
beforeEach(async () => { await clearPolicies(server); });
afterAll(async () => { await server.stop(); });

function policy(id: string, fields: Record<string, unknown>) {
  return putResources(server, [{ resourceType: 'AccessPolicy', id, ...fields }]);
}

async function status(client: TestClient, method: string, path: string): Promise<number> {
  const init: RequestInit & { auth: string; json?: unknown } = { method, auth: client.auth };
  if (method === 'POST' || method === 'PUT') init.json = { resourceType: path.split('/')[1] };
  const res = await server.request(path, init);
  await res.arrayBuffer();
  return res.status;
}

async function expect403(client: TestClient, method: string, path: string) {
  const res = await server.request(path, { method, auth: client.auth });
  expect(res.status).toBe(403);
  const body = await res.json();
  expect(body.message).toContain(`client "${client.id}"`);
  expect(body.issue[0]).toMatchObject({ code: 'forbidden', diagnostics: body.message });
  expect(res.headers.get('www-authenticate')).toBeNull();
}

describe('policies: happy', () => {
  test('root is allowed everything even when no policy exists', async () => {
    expect((await server.request('/Patient/p1')).status).toBe(200);
    expect((await server.request('/AccessPolicy')).status).toBe(200);
  });

  test('an allow policy linked to a client lets it do anything', async () => {
    await policy('alice-all', { engine: 'allow', link: [{ resourceType: 'Client', id: 'alice' }] });
    expect(await status(alice, 'GET', '/Patient/p1')).toBe(200);
    expect(await status(alice, 'POST', '/Patient')).toBe(201);
    expect(await status(alice, 'GET', '/fhir/Observation/o1')).toBe(200);
  });

  test('a policy without link applies to every client', async () => {
    await policy('everyone', { engine: 'allow' });
    expect(await status(alice, 'GET', '/Patient/p1')).toBe(200);
    expect(await status(bob, 'GET', '/Patient/p1')).toBe(200);
  });

  test('a link may also be a FHIR reference "Client/<id>"', async () => {
    await policy('by-ref', { engine: 'allow', link: [{ reference: 'Client/bob' }] });
    expect(await status(bob, 'GET', '/Patient/p1')).toBe(200);
    expect(await status(alice, 'GET', '/Patient/p1')).toBe(403);
  });

  test('a new policy takes effect on the next request', async () => {
    expect(await status(bob, 'GET', '/Patient/p1')).toBe(403);
    await policy('bob-now', { engine: 'allow', link: [{ resourceType: 'Client', id: 'bob' }] });
    expect(await status(bob, 'GET', '/Patient/p1')).toBe(200);
    expect((await server.request('/AccessPolicy/bob-now', { method: 'DELETE' })).status).toBe(204);
    expect(await status(bob, 'GET', '/Patient/p1')).toBe(403);
  });
});

describe('policies: matcho', () => {
  test('uri exact allows that path only, at / and under /fhir', async () => {
    await policy('exact', { engine: 'matcho', matcho: { uri: '/Patient/p1' } });
    expect(await status(alice, 'GET', '/Patient/p1')).toBe(200);
    expect(await status(alice, 'GET', '/fhir/Patient/p1')).toBe(200);
    expect(await status(alice, 'GET', '/Patient')).toBe(403);
    expect(await status(alice, 'GET', '/Observation/o1')).toBe(403);
  });

  test('uri "#regex" allows every matching path', async () => {
    await policy('regex', { engine: 'matcho', matcho: { uri: '#^/Patient(/.*)?$' } });
    expect(await status(alice, 'GET', '/Patient')).toBe(200);
    expect(await status(alice, 'GET', '/Patient/p1/_history')).toBe(200);
    expect(await status(alice, 'GET', '/fhir/Patient/p1')).toBe(200);
    expect(await status(alice, 'GET', '/Observation/o1')).toBe(403);
    expect(await status(alice, 'GET', '/PatientX')).toBe(403);
  });

  test('request-method (lower case) limits the methods', async () => {
    await policy('read-only', { engine: 'matcho', matcho: { 'request-method': 'get' } });
    expect(await status(alice, 'GET', '/Patient/p1')).toBe(200);
    expect(await status(alice, 'POST', '/Patient')).toBe(403);
    expect(await status(alice, 'DELETE', '/Patient/p1')).toBe(403);
  });

  test('$one-of allows when any alternative matches', async () => {
    await policy('one-of', { engine: 'matcho', matcho: { '$one-of': [{ uri: '/Patient/p1' }, { uri: '#^/Observation', 'request-method': 'get' }] } });
    expect(await status(alice, 'GET', '/Patient/p1')).toBe(200);
    expect(await status(alice, 'GET', '/Observation/o1')).toBe(200);
    expect(await status(alice, 'DELETE', '/Observation/o1')).toBe(403);
    expect(await status(alice, 'GET', '/Patient')).toBe(403);
  });

  test('$enum allows the listed values', async () => {
    await policy('enum', { engine: 'matcho', matcho: { 'request-method': { $enum: ['get', 'post'] }, uri: '#^/Patient' } });
    expect(await status(alice, 'GET', '/Patient')).toBe(200);
    expect(await status(alice, 'POST', '/Patient')).toBe(201);
    expect(await status(alice, 'PUT', '/Patient/p2')).toBe(403);
    expect(await status(alice, 'GET', '/Observation')).toBe(403);
  });

  test('a linked matcho policy applies only to its client', async () => {
    await policy('alice-patients', { engine: 'matcho', matcho: { uri: '#^/Patient' }, link: [{ resourceType: 'Client', id: 'alice' }] });
    expect(await status(alice, 'GET', '/Patient')).toBe(200);
    expect(await status(bob, 'GET', '/Patient')).toBe(403);
  });

  test('matcho can match the client and query parameters', async () => {
    await policy('params', { engine: 'matcho', matcho: { client: { id: 'bob' }, params: { _count: '1' } } });
    expect(await status(bob, 'GET', '/Patient?_count=1')).toBe(200);
    expect(await status(bob, 'GET', '/Patient?_count=2')).toBe(403);
    expect(await status(alice, 'GET', '/Patient?_count=1')).toBe(403);
  });
});

describe('policies: denials', () => {
  test('an authenticated client with no policy at all → 403', async () => {
    await expect403(alice, 'GET', '/Patient/p1');
    await expect403(bob, 'GET', '/Observation');
  });

  test('a policy linked to another client → 403', async () => {
    await policy('bob-only', { engine: 'allow', link: [{ resourceType: 'Client', id: 'bob' }] });
    await expect403(alice, 'GET', '/Patient/p1');
    expect(await status(bob, 'GET', '/Patient/p1')).toBe(200);
  });

  test('a matcho policy that does not match → 403', async () => {
    await policy('other-path', { engine: 'matcho', matcho: { uri: '/Observation/o1', 'request-method': 'get' } });
    await expect403(alice, 'GET', '/Patient/p1');
    await expect403(alice, 'DELETE', '/Observation/o1');
  });
});

describe('policies: security', () => {
  test('$one-of next to other keys narrows access, it never widens it', async () => {
    await policy('narrow', { engine: 'matcho', matcho: { 'request-method': 'get', '$one-of': [{ uri: '/Patient/p1' }, { uri: '/Patient/p2' }] } });
    expect(await status(alice, 'GET', '/Patient/p1')).toBe(200);
    expect(await status(alice, 'DELETE', '/Patient/p1')).toBe(403);
    expect(await status(alice, 'GET', '/Observation/o1')).toBe(403);
  });

  test('a broken regex allows nothing', async () => {
    await policy('broken', { engine: 'matcho', matcho: { uri: '#^/Patient(' } });
    expect(await status(alice, 'GET', '/Patient/p1')).toBe(403);
  });

  test('a wrong secret is 401 even when a policy would allow the request', async () => {
    await policy('everyone', { engine: 'allow' });
    const res = await server.request('/Patient/p1', { auth: 'Basic ' + Buffer.from('alice:wrong').toString('base64') });
    expect(res.status).toBe(401);
  });

  test('an AccessPolicy with an unknown engine or no matcho object is refused with 400', async () => {
    for (const fields of [{ engine: 'sql', sql: { query: 'select true' } }, { engine: 'matcho' }, {}]) {
      const res = await server.request('/AccessPolicy/bad', { method: 'PUT', json: fields });
      expect(res.status).toBe(400);
      expect((await res.json()).message).toContain('AccessPolicy');
    }
  });

  test('a client allowed only to read Patients cannot write Clients or policies to escalate', async () => {
    await policy('patients-read', { engine: 'matcho', matcho: { uri: '#^/Patient', 'request-method': 'get' } });
    expect(await status(alice, 'PUT', '/AccessPolicy/mine')).toBe(403);
    expect(await status(alice, 'PUT', '/Client/alice')).toBe(403);
    const batch = await server.request('/', { method: 'PUT', auth: alice.auth, json: [{ resourceType: 'AccessPolicy', id: 'x', engine: 'allow' }] });
    expect(batch.status).toBe(403);
    const [row] = await server.sql`select count(*)::int as n from accesspolicy where id in ('mine', 'x')`;
    expect(row!.n).toBe(0);
  });
});
