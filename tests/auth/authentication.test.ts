/** SPEC §3: HTTP Basic with Client id and secret; 401 with WWW-Authenticate when it fails. */
import { afterAll, beforeAll, describe, expect, spyOn, test } from 'bun:test';
import { basic, ROOT_SECRET, startTestServer, type TestServer } from '../helpers/server.ts';
import { addClient, type TestClient } from '../helpers/clients.ts';

let server: TestServer;
let client: TestClient;
beforeAll(async () => {
  // many deliberate 401s from one address: the failed-login limiter has its own tests (login-limiter.test.ts)
  server = await startTestServer({ FHIRHOSE_LOGIN_FAILURES_PER_MINUTE: '0' });
  client = await addClient(server, 'reader', [{ engine: 'allow' }]);
});
afterAll(async () => { await server.stop(); });

async function expect401(res: Response, message: RegExp) {
  expect(res.status).toBe(401);
  expect(res.headers.get('www-authenticate')).toMatch(/^Basic( |$)/);
  const body = await res.json();
  expect(body.resourceType).toBe('OperationOutcome');
  expect(body.message).toMatch(message);
  expect(body.issue[0].diagnostics).toBe(body.message);
}

describe('authentication: happy', () => {
  test('root with FHIRHOSE_ROOT_SECRET may call the API', async () => {
    const res = await server.request('/Patient', { auth: basic('root', ROOT_SECRET) });
    expect(res.status).toBe(200);
  });

  test('a Client created through the API authenticates with its id and secret', async () => {
    const res = await server.request('/Patient', { auth: client.auth });
    expect(res.status).toBe(200);
  });

  test('GET /health needs no credentials, at / and under /fhir', async () => {
    for (const path of ['/health', '/fhir/health']) {
      const res = await server.request(path, { auth: null });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: 'ok' });
    }
  });
});

describe('authentication: errors', () => {
  test('no credentials → 401 with WWW-Authenticate: Basic', async () => {
    await expect401(await server.request('/Patient', { auth: null }), /Authentication required/);
  });

  test('every route but /health and GET /metadata needs credentials, including PUT / and unknown paths', async () => {
    for (const [method, path] of [['POST', '/metadata'], ['PUT', '/'], ['GET', '/fhir/Patient'], ['GET', '/no/such/route/here']] as const) {
      await expect401(await server.request(path, { method, auth: null }), /Authentication required/);
    }
  });

  test('GET /metadata answers without credentials (SPEC §3: FHIR clients fetch it first, unauthenticated)', async () => {
    for (const path of ['/metadata', '/fhir/metadata']) {
      const res = await server.request(path, { auth: null });
      expect(res.status).toBe(200);
      expect((await res.json()).resourceType).toBe('CapabilityStatement');
    }
  });

  test('a wrong secret → 401', async () => {
    await expect401(await server.request('/Patient', { auth: basic('reader', 'not-the-secret') }), /Invalid client id or secret/);
    await expect401(await server.request('/Patient', { auth: basic('root', 'wrong') }), /Invalid client id or secret/);
  });

  test('an unknown client → 401, with the same message as a wrong secret', async () => {
    await expect401(await server.request('/Patient', { auth: basic('nobody', 'x') }), /^Invalid client id or secret$/);
  });

  test('malformed Authorization headers → 401', async () => {
    const headers = [
      'Bearer abc.def.ghi',
      'Basic',
      'Basic !!!not-base64!!!',
      'Basic ' + Buffer.from('no-colon-here').toString('base64'),
      'Basic ' + Buffer.from(':').toString('base64'),
      basic('reader', client.secret) + ' extra',
    ];
    for (const header of headers) {
      await expect401(await server.request('/Patient', { auth: header }), /HTTP Basic|Malformed|Invalid client id or secret/);
    }
  });
});

describe('authentication: security', () => {
  test('a known-good credential is verified with argon2 once, not on every request', async () => {
    const verify = spyOn(Bun.password, 'verify');
    try {
      const fresh = await addClient(server, 'cached', [{ engine: 'allow' }]);
      verify.mockClear();
      for (let i = 0; i < 50; i++) expect((await server.request('/Patient?_count=1', { auth: fresh.auth })).status).toBe(200);
      expect(verify).toHaveBeenCalledTimes(1);
      // wrong secrets are never cached: each one is checked
      for (let i = 0; i < 3; i++) expect((await server.request('/Patient', { auth: basic('cached', 'wrong') })).status).toBe(401);
      expect(verify).toHaveBeenCalledTimes(4);
      // an unknown client pays the same verification, so timing does not tell which ids exist
      expect((await server.request('/Patient', { auth: basic('no-such-client', 'wrong') })).status).toBe(401);
      expect(verify).toHaveBeenCalledTimes(5);
    } finally {
      verify.mockRestore();
    }
  });

  test('changing a Client through the API drops its cached credential at once', async () => {
    const c = await addClient(server, 'rotating', [{ engine: 'allow' }]);
    expect((await server.request('/Patient', { auth: c.auth })).status).toBe(200);
    const put = await server.request('/Client/rotating', { method: 'PUT', json: { secret: 'new-secret', grant_types: ['basic'] } });
    expect(put.status).toBe(200);
    await expect401(await server.request('/Patient', { auth: c.auth }), /Invalid client id or secret/);
    expect((await server.request('/Patient', { auth: basic('rotating', 'new-secret') })).status).toBe(200);
    expect((await server.request('/Client/rotating', { method: 'DELETE' })).status).toBe(204);
    await expect401(await server.request('/Patient', { auth: basic('rotating', 'new-secret') }), /Invalid client id or secret/);
  });

  test('Client secrets are stored as argon2id hashes, never as the plaintext', async () => {
    const rows = await server.sql`select id, resource->>'secret' as secret from client order by id`;
    expect(rows.length).toBeGreaterThanOrEqual(3);
    for (const row of rows) expect(row.secret).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    const [reader] = rows.filter((r) => r.id === 'reader');
    expect(reader!.secret).not.toContain(client.secret);
    const [hit] = await server.sql`select count(*)::int as n from client where resource::text like ${'%' + client.secret + '%'}`;
    expect(hit!.n).toBe(0);
    const [history] = await server.sql`select count(*)::int as n from client_history where resource::text like ${'%' + ROOT_SECRET + '%'}`;
    expect(history!.n).toBe(0);
  });

  test('the API never returns a Client secret, hashed or not', async () => {
    const responses = [
      await server.request('/Client/reader'),
      await server.request('/Client?_id=reader'),
      await server.request('/Client/reader/_history'),
      await server.request('/Client', { method: 'POST', json: { id: 'posted', secret: 'posted-secret', grant_types: ['basic'] } }),
      await server.request('/Client/posted', { method: 'PUT', json: { secret: 'posted-secret-2' } }),
      await server.request('/', { method: 'PUT', json: [{ resourceType: 'Client', id: 'batch', secret: 'batch-secret' }] }),
      await server.request('/Client/reader', { headers: { accept: 'text/yaml' } }),
    ];
    for (const res of responses) {
      expect(res.status).toBeLessThan(300);
      const text = await res.text();
      expect(text).toContain('Client');
      expect(text).not.toMatch(/secret"?:|argon2|posted-secret|batch-secret|reader-secret/);
    }
  });

  test('error bodies do not echo the credentials that were sent', async () => {
    const res = await server.request('/Patient', { auth: basic('reader', 'typo-secret-123') });
    expect(res.status).toBe(401);
    const text = await res.text();
    expect(text).not.toContain('typo-secret-123');
    expect(text).not.toContain(Buffer.from('reader:typo-secret-123').toString('base64'));
  });
});
