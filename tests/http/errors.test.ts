/** SPEC §1: errors are OperationOutcome with the right status and `message` = issue[0].diagnostics; no stack, no SQL, no secrets. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { basic, ROOT_SECRET, startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server.stop(); });

type Case = [string, number, () => Promise<Response>];
const json = (body: string) => ({ body, headers: { 'content-type': 'application/json' } });

const cases: Case[] = [
  ['no credentials', 401, () => server.request('/Patient', { auth: null })],
  ['wrong secret', 401, () => server.request('/Patient', { auth: basic('root', 'nope') })],
  ['unknown type', 404, () => server.request('/Unicorn/1')],
  ['unknown route', 404, () => server.request('/Patient/1/_history/2/extra')],
  ['unsupported method', 404, () => server.request('/Patient/1', { method: 'PATCH', ...json('{}') })],
  ['missing resource', 404, () => server.request('/Patient/none')],
  ['malformed JSON', 400, () => server.request('/Patient', { method: 'POST', ...json('{"a":') })],
  ['malformed YAML', 400, () => server.request('/Patient', { method: 'POST', body: '[', headers: { 'content-type': 'text/yaml' } })],
  ['bad search parameter', 400, () => server.request('/Patient?nickname=x')],
  ['BulkImportStatus write', 405, () => server.request('/BulkImportStatus/x', { method: 'PUT', ...json('{}') })],
  ['POST over an existing id', 409, () => server.request('/Patient', { method: 'POST', ...json('{"id": "exists"}') })],
  ['wrong content type', 415, () => server.request('/Patient', { method: 'POST', body: '{}', headers: { 'content-type': 'text/plain' } })],
];

describe('errors', () => {
  beforeAll(async () => {
    expect((await server.request('/Patient/exists', { method: 'PUT', json: {} })).status).toBe(201);
  });

  for (const [what, status, call] of cases) {
    test(`${what} → ${status} OperationOutcome with message = issue[0].diagnostics`, async () => {
      const res = await call();
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toStartWith('application/json');
      const body = await res.json();
      expect(Object.keys(body).sort()).toEqual(['issue', 'message', 'resourceType']);
      expect(body.resourceType).toBe('OperationOutcome');
      expect(body.issue).toHaveLength(1);
      expect(body.issue[0]).toEqual({ severity: 'error', code: expect.any(String), diagnostics: body.message });
      expect(body.message.length).toBeGreaterThan(10);
      expect(body.message).not.toMatch(/\n\s+at |\.ts:\d+|select |insert |PostgresError/i);
    });
  }

  test('a database failure is a 500 that shows no SQL, no table, no stack, no secret', async () => {
    await server.sql.unsafe('drop table "flag_history"');
    const res = await server.request('/Flag/f1', { method: 'PUT', json: { status: 'active', code: {} } });
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(JSON.parse(text).message).toBe('Internal server error; the server log has the details');
    expect(text).not.toMatch(/flag|relation|insert|select|\.ts|postgres|42P01/i);
    expect(text).not.toContain(ROOT_SECRET);
  });

  test('the server keeps serving after an error', async () => {
    expect((await server.request('/Patient/exists')).status).toBe(200);
  });
});
