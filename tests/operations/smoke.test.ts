import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server.stop(); });

test('the Aidbox demo SQL rows come out of GET /Patient/<id> as valid resources', async () => {
  await server.sql.unsafe(`INSERT INTO patient (id, txid, status, resource) SELECT g.id, g.id, 'created', '{"name": [{"family": "John"}]}' FROM generate_series(1, 1000) AS g (id)`);
  const res = await server.request('/Patient/5');
  expect(res.status).toBe(200);
  const body = await res.json();
  expect(body).toMatchObject({ resourceType: 'Patient', id: '5', meta: { versionId: '5' }, name: [{ family: 'John' }] });
});
