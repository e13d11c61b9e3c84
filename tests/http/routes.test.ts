/** SPEC §1, §4: every route exists at / and under /fhir; /metadata lists what is implemented. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server.stop(); });

describe('routes', () => {
  for (const prefix of ['', '/fhir']) {
    test(`the whole REST surface works at "${prefix || '/'}"`, async () => {
      const id = `r${prefix.length}`;
      const created = await server.request(`${prefix}/Patient`, { method: 'POST', json: { id, active: true } });
      expect(created.status).toBe(201);
      const v1 = (await created.json()).meta.versionId;
      expect((await server.request(`${prefix}/Patient/${id}`)).status).toBe(200);
      const updated = await server.request(`${prefix}/Patient/${id}`, { method: 'PUT', json: { active: false } });
      expect(updated.status).toBe(200);
      expect((await server.request(`${prefix}/Patient/${id}/_history`)).status).toBe(200);
      const old = await server.request(`${prefix}/Patient/${id}/_history/${v1}`);
      expect((await old.json()).active).toBe(true);
      const found = await (await server.request(`${prefix}/Patient?_id=${id}`)).json();
      expect(found.entry).toHaveLength(1);
      const batch = await server.request(`${prefix}/`, { method: 'PUT', json: [{ resourceType: 'Patient', id: `${id}b` }] });
      expect(batch.status).toBe(200);
      expect((await server.request(`${prefix}/metadata`)).status).toBe(200);
      expect((await server.request(`${prefix}/health`, { auth: null })).status).toBe(200);
      expect((await server.request(`${prefix}/Patient/${id}`, { method: 'DELETE' })).status).toBe(204);
      expect((await server.request(`${prefix}/Patient/${id}`)).status).toBe(404);
    });
  }

  test('paging links keep the /fhir prefix of the request', async () => {
    await server.request('/', { method: 'PUT', json: [{ resourceType: 'Flag', id: 'a' }, { resourceType: 'Flag', id: 'b' }] });
    const bundle = await (await server.request('/fhir/Flag?_count=1')).json();
    const next = bundle.link.find((l: { relation: string }) => l.relation === 'next').url;
    expect(new URL(next).pathname).toBe('/fhir/Flag');
    expect(new URL(next).searchParams.get('_after')).toBe('a');
  });

  test('GET /metadata is a CapabilityStatement for FHIR 4.0.1 listing every type with its interactions', async () => {
    const cs = await (await server.request('/metadata')).json();
    expect(cs).toMatchObject({ resourceType: 'CapabilityStatement', status: 'active', kind: 'instance', fhirVersion: '4.0.1', software: { name: 'fhirhose' } });
    const types = cs.rest[0].resource.map((r: { type: string }) => r.type);
    expect(types).toContain('Patient');
    expect(types).toContain('Client');
    expect(types).toHaveLength(149);
    const patient = cs.rest[0].resource.find((r: { type: string }) => r.type === 'Patient');
    expect(patient.interaction.map((i: { code: string }) => i.code).sort()).toEqual(['create', 'delete', 'history-instance', 'read', 'search-type', 'update', 'vread']);
    expect(patient.searchParam.slice(0, 2).map((p: { name: string }) => p.name)).toEqual(['_id', '_lastUpdated']);
    expect(patient.searchParam).toContainEqual({ name: 'gender', type: 'token' });
    expect(patient.searchParam).toContainEqual({ name: 'birthdate', type: 'date' });
    const client = cs.rest[0].resource.find((r: { type: string }) => r.type === 'Client');
    expect(client.searchParam.map((p: { name: string }) => p.name)).toEqual(['_id', '_lastUpdated']);
  });
});
