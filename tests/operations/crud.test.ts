/** SPEC §4: create, read, update with history, vread, delete, recreate. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server.stop(); });

async function json(res: Response, status: number) {
  const body = await res.json();
  expect({ status: res.status, body }).toMatchObject({ status });
  return body;
}

describe('CRUD: happy', () => {
  let created: { id: string; meta: { versionId: string; lastUpdated: string } };

  test('POST /Patient creates with a generated id: 201, Location, status created', async () => {
    const res = await server.request('/Patient', { method: 'POST', json: { resourceType: 'Patient', name: [{ family: 'Smith' }] } });
    created = await json(res, 201);
    expect(created.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.headers.get('location')).toBe(`/Patient/${created.id}/_history/${created.meta.versionId}`);
    const [row] = await server.sql`select status, txid::text, resource from patient where id = ${created.id}`;
    expect(row).toEqual({ status: 'created', txid: created.meta.versionId, resource: { name: [{ family: 'Smith' }] } });
  });

  test('GET /Patient/<id> reads it back, identical to the create answer', async () => {
    expect(await json(await server.request(`/Patient/${created.id}`), 200)).toEqual(created);
  });

  test('PUT /Patient/<id> updates: 200, new version, the old one in patient_history, cts kept', async () => {
    const [before] = await server.sql`select cts from patient where id = ${created.id}`;
    const updated = await json(await server.request(`/Patient/${created.id}`, { method: 'PUT', json: { resourceType: 'Patient', id: created.id, name: [{ family: 'Jones' }] } }), 200);
    expect(Number(updated.meta.versionId)).toBeGreaterThan(Number(created.meta.versionId));
    const [row] = await server.sql`select status, cts from patient where id = ${created.id}`;
    expect(row!.status).toBe('updated');
    expect(row!.cts).toEqual(before!.cts);
    const history = await server.sql`select txid::text, status, resource from patient_history where id = ${created.id}`;
    expect([...history]).toEqual([{ txid: created.meta.versionId, status: 'created', resource: { name: [{ family: 'Smith' }] } }]);
  });

  test('GET /Patient/<id>/_history/<vid> reads the old version; _history lists newest first', async () => {
    const old = await json(await server.request(`/Patient/${created.id}/_history/${created.meta.versionId}`), 200);
    expect(old.name).toEqual([{ family: 'Smith' }]);
    const bundle = await json(await server.request(`/Patient/${created.id}/_history`), 200);
    expect(bundle).toMatchObject({ resourceType: 'Bundle', type: 'history', total: 2 });
    expect(bundle.entry.map((e: { request: { method: string } }) => e.request.method)).toEqual(['PUT', 'POST']);
  });

  test('DELETE → 204; then GET is 404, and history shows the delete', async () => {
    expect((await server.request(`/Patient/${created.id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await server.request(`/Patient/${created.id}`)).status).toBe(404);
    const bundle = await json(await server.request(`/Patient/${created.id}/_history`), 200);
    expect(bundle.entry.map((e: { request: { method: string } }) => e.request.method)).toEqual(['DELETE', 'PUT', 'POST']);
    const rows = await server.sql`select status from patient_history where id = ${created.id} order by txid`;
    expect(rows.map((r) => r.status)).toEqual(['created', 'updated', 'deleted']);
    const [n] = await server.sql`select count(*)::int as n from patient where id = ${created.id}`;
    expect(n!.n).toBe(0);
  });

  test('PUT after DELETE recreates: 201, status recreated, a version above the delete', async () => {
    const again = await json(await server.request(`/Patient/${created.id}`, { method: 'PUT', json: { name: [{ family: 'Back' }] } }), 201);
    const [row] = await server.sql`select status from patient where id = ${created.id}`;
    expect(row!.status).toBe('recreated');
    const [top] = await server.sql`select max(txid)::text as txid from patient_history where id = ${created.id}`;
    expect(Number(again.meta.versionId)).toBeGreaterThan(Number(top!.txid));
  });

  test('PUT to a new id creates it (201); POST with an id keeps the id', async () => {
    await json(await server.request('/Observation/obs-1', { method: 'PUT', json: { status: 'final', code: {} } }), 201);
    const posted = await json(await server.request('/Observation', { method: 'POST', json: { id: 'obs-2', status: 'final', code: {} } }), 201);
    expect(posted.id).toBe('obs-2');
  });

  test('concurrent PUTs of one new id all succeed: one creates, the others update in turn', async () => {
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) =>
      server.request('/Patient/racy', { method: 'PUT', json: { name: [{ family: `r${i}` }] } })));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
    const [h] = await server.sql`select count(*)::int as n, count(distinct txid)::int as v from patient_history where id = 'racy'`;
    expect(h).toEqual({ n: 11, v: 11 });
  });
  test('hand-inserted rows whose resource is not an object read as an empty resource, as $dump does', async () => {
    await server.sql.unsafe(`insert into patient (id, txid, status, resource) values ('as-string', 1, 'created', '"text"'), ('as-array', 2, 'created', '[1, 2]')`);
    for (const id of ['as-string', 'as-array']) {
      const body = await json(await server.request(`/Patient/${id}`), 200);
      expect(Object.keys(body).sort()).toEqual(['id', 'meta', 'resourceType']);
      const dumped = (await (await server.request('/Patient/$dump')).text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
      expect(dumped.find((r: { id: string }) => r.id === id)).toEqual(body);
    }
  });
});

describe('CRUD: errors', () => {
  test('unknown resource type → 404 on every route', async () => {
    for (const [method, path] of [['GET', '/Pateint'], ['GET', '/Pateint/1'], ['POST', '/Pateint'], ['PUT', '/Pateint/1'], ['DELETE', '/Pateint/1'], ['GET', '/Pateint/1/_history']] as const) {
      const res = await server.request(path, { method, ...(method === 'POST' || method === 'PUT' ? { json: {} } : {}) });
      expect(res.status).toBe(404);
      expect((await res.json()).message).toBe('Unknown resource type "Pateint"');
    }
  });

  test('missing resources and versions → 404', async () => {
    for (const path of ['/Patient/nope', '/Patient/nope/_history', '/Patient/nope/_history/1', '/Patient/racy/_history/abc']) {
      expect((await server.request(path)).status).toBe(404);
    }
    expect((await server.request('/Patient/nope', { method: 'DELETE' })).status).toBe(404);
  });

  test('POST with an id that exists → 409 and the stored resource is untouched', async () => {
    const res = await server.request('/Observation', { method: 'POST', json: { id: 'obs-1', status: 'amended', code: {} } });
    expect(res.status).toBe(409);
    expect((await res.json()).message).toContain('Observation/obs-1 already exists');
    const [row] = await server.sql`select resource->>'status' as status from observation where id = 'obs-1'`;
    expect(row!.status).toBe('final');
  });

  test('a body whose resourceType or id contradicts the URL → 400', async () => {
    const a = await server.request('/Patient/p', { method: 'PUT', json: { resourceType: 'Observation' } });
    expect(a.status).toBe(400);
    expect((await a.json()).message).toContain('does not match the URL');
    const b = await server.request('/Patient/p', { method: 'PUT', json: { id: 'q' } });
    expect(b.status).toBe(400);
    const c = await server.request('/Patient', { method: 'POST', json: { resourceType: 'Observation' } });
    expect(c.status).toBe(400);
  });

  test('an invalid id → 400; a body that is not an object → 400', async () => {
    expect((await server.request('/Patient', { method: 'POST', json: { id: 'x'.repeat(65) } })).status).toBe(400);
    expect((await server.request('/Patient/p', { method: 'PUT', json: [1, 2] })).status).toBe(400);
  });

  test('BulkImportStatus belongs to $import: create, update and delete → 405', async () => {
    expect((await server.request('/BulkImportStatus', { method: 'POST', json: {} })).status).toBe(405);
    expect((await server.request('/BulkImportStatus/x', { method: 'PUT', json: {} })).status).toBe(405);
    expect((await server.request('/BulkImportStatus/x', { method: 'DELETE' })).status).toBe(405);
  });
});
