/**
 * The first steps of the Aidbox Bulk API demo, verbatim (issue 2 §3, §5): the YAML `PUT /` that
 * creates bulk-client, then 100,000 patients inserted by hand with SQL, read back through the API.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import YAML from 'yaml';
import { basic, startTestServer, type TestServer } from '../helpers/server.ts';

const DEMO_YAML = `- resourceType: Client
  id: bulk-client
  secret: secret
  grant_types: ['basic']
- resourceType: AccessPolicy
  id: bulk-client
  engine: allow
  link:
  - {id: 'bulk-client', resourceType: 'Client'}
`;
const DEMO_SQL = `INSERT INTO patient (id, txid, status, resource) SELECT g.id, g.id, 'created', '{"name": [{"family": "John"}]}' FROM generate_series(1, 100000) AS g (id);`;
const bulk = basic('bulk-client', 'secret');

let server: TestServer;
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server.stop(); });

describe('Aidbox demo', () => {
  test('PUT / with the demo YAML as root creates bulk-client and its policy, answered as stored', async () => {
    const res = await server.request('/', { method: 'PUT', body: DEMO_YAML, headers: { 'content-type': 'text/yaml' } });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body).toHaveLength(2);
    expect(body[0]).toMatchObject({ resourceType: 'Client', id: 'bulk-client', grant_types: ['basic'], meta: { versionId: expect.any(String) } });
    expect(body[0].secret).toBeUndefined();
    expect(body[1]).toMatchObject({ resourceType: 'AccessPolicy', id: 'bulk-client', engine: 'allow', link: [{ id: 'bulk-client', resourceType: 'Client' }] });
  });

  test('curl -u bulk-client:secret is then allowed everywhere, at / and /fhir', async () => {
    for (const path of ['/metadata', '/Patient', '/fhir/Patient', '/Client', '/AccessPolicy/bulk-client']) {
      expect((await server.request(path, { auth: bulk })).status).toBe(200);
    }
    const created = await server.request('/Observation', { method: 'POST', auth: bulk, json: { status: 'final', code: { text: 'x' } } });
    expect(created.status).toBe(201);
    expect((await server.request('/Patient', { auth: basic('bulk-client', 'Secret') })).status).toBe(401);
  });

  test('the demo SQL runs unchanged and inserts 100,000 patients', async () => {
    const result = await server.sql.unsafe(DEMO_SQL);
    expect(result.count).toBe(100_000);
    const [row] = await server.sql`select count(*)::int as n, min(cts) is not null as cts, bool_and(resource_type = 'Patient') as typed from patient`;
    expect(row).toEqual({ n: 100_000, cts: true, typed: true });
  });

  test('GET /Patient/5 returns a valid Patient with id, resourceType and meta from the columns', async () => {
    const res = await server.request('/Patient/5', { auth: bulk });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body).toEqual({
      resourceType: 'Patient',
      id: '5',
      meta: { versionId: '5', lastUpdated: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/) },
      name: [{ family: 'John' }],
    });
  });

  test('hand-inserted rows come out of search, history, vread and YAML as complete resources', async () => {
    const search = await (await server.request('/Patient?_count=3', { auth: bulk })).json();
    expect(search.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual(['1', '10', '100']);
    for (const e of search.entry) expect(e.resource).toMatchObject({ resourceType: 'Patient', meta: { versionId: e.resource.id } });
    const history = await (await server.request('/Patient/7/_history', { auth: bulk })).json();
    expect(history.entry).toHaveLength(1);
    expect(history.entry[0].resource).toMatchObject({ id: '7', meta: { versionId: '7' } });
    expect((await server.request('/Patient/7/_history/7', { auth: bulk })).status).toBe(200);
    const yaml = YAML.parse(await (await server.request('/Patient/9', { auth: bulk, headers: { accept: 'text/yaml' } })).text());
    expect(yaml).toMatchObject({ resourceType: 'Patient', id: '9', meta: { versionId: '9' } });
  });

  test('a hand-inserted row can be updated again and again: versions keep growing past its own txid', async () => {
    const versions: number[] = [5];
    for (let i = 0; i < 6; i++) {
      const res = await server.request('/Patient/5', { method: 'PUT', auth: bulk, json: { name: [{ family: `John ${i}` }] } });
      expect(res.status).toBe(200);
      versions.push(Number((await res.json()).meta.versionId));
    }
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    expect(new Set(versions).size).toBe(versions.length);
    const history = await (await server.request('/Patient/5/_history', { auth: bulk })).json();
    expect(history.entry.map((e: { resource: { meta: { versionId: string } } }) => Number(e.resource.meta.versionId))).toEqual([...versions].reverse());
    const [row] = await server.sql`select count(*)::int as n from patient_history where id = '5'`;
    expect(row!.n).toBe(6);
  });
});
