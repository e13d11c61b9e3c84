/**
 * $export against the reference client's protocol (tests/helpers/reference-client.ts restates
 * smart-on-fhir/bulk-data-client, which is not on npm) and a checklist written from the Bulk Data
 * IG 3.0 ("Bulk Data Kick-off Request", "Bulk Data Status Request", "Bulk Data Delete Request",
 * "File Request") and the checks of the Inferno bulk-data test kit: on the Synthea fixture
 * patients, with Basic credentials, the counts the client reads checked against the database.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, basic, ROOT_SECRET, type TestServer } from '../helpers/server.ts';
import { addClient, type TestClient } from '../helpers/clients.ts';
import { referenceClientExport, type ReferenceRun } from '../helpers/reference-client.ts';
import { syntheaBundles, uniqueResources, type SyntheaPatient } from '../helpers/synthea-bundles.ts';
import { tableOf } from '../../src/fhir/types.ts';

let server: TestServer;
let patients: SyntheaPatient[];
let observer: TestClient;
const ROOT = { authorization: basic('root', ROOT_SECRET) };
/** FHIR instant (the IG's transactionTime), as Inferno checks it. */
const INSTANT = /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

beforeAll(async () => {
  server = await startTestServer();
  patients = syntheaBundles();
  const put = await server.request('/', { method: 'PUT', json: uniqueResources(patients) });
  expect(put.status).toBe(200);
  const [a, b] = patients.map((p) => p.patientId);
  const group = await server.request('/', { method: 'PUT', json: [
    { resourceType: 'Group', id: 'pair', type: 'person', actual: true, member: [{ entity: { reference: `Patient/${a}` } }, { entity: { reference: `Patient/${b}` } }] },
  ] });
  expect(group.status).toBe(200);
  observer = await addClient(server, 'observer', [{ engine: 'matcho', matcho: { uri: '#^/(\\$export|Observation)$', 'request-method': 'get' } }]);
}, 60_000);
afterAll(async () => { await server.stop(); });

async function tableCount(type: string): Promise<number> {
  const [row] = await server.sql.unsafe(`select count(*)::int as n from "${tableOf(type)}"`);
  return Number(row!.n);
}

/** Per type, the resources the client read, and no type twice in a file. */
function readByType(run: ReferenceRun): Map<string, Record<string, any>[]> {
  const out = new Map<string, Record<string, any>[]>();
  for (const f of run.files.filter((f) => f.exportType === 'output')) out.set(f.type, [...(out.get(f.type) ?? []), ...f.resources]);
  return out;
}

const own = (p: SyntheaPatient, type: string) => p.resources.filter((r) => r.resourceType === type).map((r) => r.id as string).sort();
const ids = (lines: Record<string, any>[] | undefined) => (lines ?? []).map((l) => l.id as string).sort();

describe('the reference client flow', () => {
  test('system level: every file read, each count exact, the counts equal the database rows of every type', async () => {
    const run = await referenceClientExport({ fhirUrl: server.url, headers: ROOT, level: 'system' });
    expect(run.capabilityStatement.instantiates).toContain('http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data');
    expect(run.statusUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\$export-status\/[0-9a-f-]{36}$/);
    for (const p of run.polls) {
      expect(Number.isNaN(p.percent)).toBe(false);
      expect(p.retryAfter).toMatch(/^([1-9]|[1-5]\d|60)$/);
    }
    for (const f of run.files) {
      expect(f.contentType).toBe('application/fhir+ndjson');
      expect(f.contentEncoding).toBe('gzip');
    }
    const read = readByType(run);
    const types = new Set(uniqueResources(patients).map((r) => r.resourceType as string));
    types.add('Group');
    expect(new Set(read.keys())).toEqual(types);
    for (const type of types) expect(read.get(type)!.length).toBe(await tableCount(type));
    expect(run.manifest.error).toEqual([]);
  }, 120_000);

  test('Patient level: all Patients and their Encounters and Observations (every row of those tables)', async () => {
    const run = await referenceClientExport({ fhirUrl: server.url, headers: ROOT, level: 'patient', query: { _type: 'Patient,Encounter,Observation' } });
    const read = readByType(run);
    expect([...read.keys()].sort()).toEqual(['Encounter', 'Observation', 'Patient']);
    for (const type of read.keys()) expect(read.get(type)!.length).toBe(await tableCount(type));
    expect(ids(read.get('Patient'))).toEqual(patients.map((p) => p.patientId).sort());
  }, 120_000);

  test('Group level: the members’ compartments only, counted against the fixture Bundles', async () => {
    const run = await referenceClientExport({ fhirUrl: server.url, headers: ROOT, level: { group: 'pair' }, query: { _type: 'Patient,Encounter,Observation,Condition' } });
    const read = readByType(run);
    const [a, b, c] = patients;
    for (const type of ['Patient', 'Encounter', 'Observation', 'Condition']) {
      expect(ids(read.get(type))).toEqual([...own(a!, type), ...own(b!, type)].sort());
      for (const id of own(c!, type)) expect(ids(read.get(type))).not.toContain(id);
    }
  }, 120_000);

  test('the client’s POST form (patient ids) under /fhir, and a client allowed only GET /Observation', async () => {
    const [, , c] = patients;
    const run = await referenceClientExport({ fhirUrl: `${server.url}/fhir`, headers: ROOT, level: 'patient', patients: [c!.patientId], query: { _type: 'Observation' } });
    expect(run.statusUrl).toContain('/fhir/$export-status/');
    expect(ids(readByType(run).get('Observation'))).toEqual(own(c!, 'Observation'));
    const limited = await referenceClientExport({ fhirUrl: server.url, headers: { authorization: observer.auth }, level: 'system' });
    expect([...readByType(limited).keys()]).toEqual(['Observation']);
    expect(readByType(limited).get('Observation')!.length).toBe(await tableCount('Observation'));
  }, 120_000);

  test('lenient by default: a parameter the server does not support comes back as an OperationOutcome in `error`', async () => {
    const run = await referenceClientExport({ fhirUrl: server.url, headers: ROOT, level: 'system', query: { _type: 'Patient', includeAssociatedData: 'LatestProvenanceResources' } });
    const errors = run.files.filter((f) => f.exportType === 'error').flatMap((f) => f.resources);
    expect(errors).toHaveLength(1);
    expect(JSON.stringify(errors[0])).toContain('includeAssociatedData');
    expect(readByType(run).get('Patient')!.length).toBe(patients.length);
  }, 120_000);
});

describe('IG checklist', () => {
  const kickOff = (path: string, init: RequestInit = {}) =>
    fetch(server.url + path, { ...init, headers: { accept: 'application/fhir+json', prefer: 'respond-async', ...ROOT, ...(init.headers as Record<string, string>) } });

  async function waitDone(statusUrl: string): Promise<Response> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const res = await fetch(statusUrl, { headers: { ...ROOT, accept: 'application/json' } });
      if (res.status !== 202) return res;
      await res.arrayBuffer();
      if (Date.now() > deadline) throw new Error(`${statusUrl} still running`);
      await Bun.sleep(50);
    }
  }

  test('CapabilityStatement without credentials: instantiates bulk-data, the export operations at system, Patient and Group', async () => {
    const res = await fetch(`${server.url}/metadata`);
    expect(res.status).toBe(200);
    const cs = await res.json();
    expect(cs.instantiates).toContain('http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data');
    const rest = cs.rest[0];
    expect(rest.operation).toContainEqual({ name: 'export', definition: 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export' });
    const op = (type: string) => rest.resource.find((r: any) => r.type === type).operation;
    expect(op('Patient')).toContainEqual({ name: 'export', definition: 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export' });
    expect(op('Group')).toContainEqual({ name: 'export', definition: 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export' });
  }, 60_000);

  test('kick-off, status and files refuse a request without (or with wrong) credentials: 401 + OperationOutcome', async () => {
    for (const path of ['/$export', '/Patient/$export', '/Group/pair/$export']) {
      for (const auth of [undefined, basic('root', 'wrong')]) {
        const res = await fetch(server.url + path, { headers: { accept: 'application/fhir+json', prefer: 'respond-async', ...(auth ? { authorization: auth } : {}) } });
        expect(res.status).toBe(401);
        expect((await res.json()).resourceType).toBe('OperationOutcome');
      }
    }
    const started = await kickOff('/$export?_type=Patient');
    const statusUrl = started.headers.get('content-location')!;
    expect((await fetch(statusUrl)).status).toBe(401);
    const manifest = await (await waitDone(statusUrl)).json();
    const file = await fetch(manifest.output[0].url, { headers: { accept: 'application/fhir+ndjson' } });
    expect(file.status).toBe(401);
    expect((await file.json()).resourceType).toBe('OperationOutcome');
  }, 60_000);

  test('every _outputFormat of the IG starts an export (202), and each is deleted with 202; another format is 400', async () => {
    for (const path of ['/$export', '/Patient/$export', '/Group/pair/$export']) {
      for (const format of ['application/fhir+ndjson', 'application/ndjson', 'ndjson']) {
        const res = await kickOff(`${path}?_outputFormat=${encodeURIComponent(format)}`);
        expect(res.status).toBe(202);
        const del = await fetch(res.headers.get('content-location')!, { method: 'DELETE', headers: { ...ROOT, accept: 'application/json' } });
        expect(del.status).toBe(202);
      }
    }
    const bad = await kickOff('/$export?_outputFormat=text/csv');
    expect(bad.status).toBe(400);
    const outcome = await bad.json();
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(outcome)).toContain('text/csv');
  }, 60_000);

  test('_since: a FHIR instant starts an export; something else is 400 naming it (strict), reported in `error` (lenient)', async () => {
    expect((await kickOff('/$export?_since=2020-01-01T00:00:00Z')).status).toBe(202);
    expect((await kickOff('/Group/pair/$export?_since=2020-01-01T00:00:00.000%2B02:00')).status).toBe(202);
    const bad = await kickOff('/$export?_since=yesterday');
    expect(bad.status).toBe(400);
    expect(JSON.stringify(await bad.json())).toContain('yesterday');
    const lenient = await kickOff('/$export?_type=Patient&_since=yesterday', { headers: { prefer: 'respond-async, handling=lenient' } });
    expect(lenient.status).toBe(202);
    const manifest = await (await waitDone(lenient.headers.get('content-location')!)).json();
    expect(manifest.error).toHaveLength(1);
    expect(manifest.error[0].type).toBe('OperationOutcome');
  }, 60_000);

  test('the complete status: 200, application/json, every required field, absolute file URLs, Expires', async () => {
    const started = await kickOff('/$export?_type=Patient,Observation');
    expect(started.status).toBe(202);
    const statusUrl = started.headers.get('content-location')!;
    const kickOffBody = await started.text();
    if (kickOffBody) expect(JSON.parse(kickOffBody).resourceType).toBe('OperationOutcome');
    const done = await waitDone(statusUrl);
    expect(done.status).toBe(200);
    expect(done.headers.get('content-type')).toContain('application/json');
    expect(Date.parse(done.headers.get('expires')!)).toBeGreaterThan(Date.now());
    const manifest = await done.json();
    for (const key of ['transactionTime', 'request', 'requiresAccessToken', 'output', 'error']) expect(Object.keys(manifest)).toContain(key);
    expect(manifest.transactionTime).toMatch(INSTANT);
    expect(manifest.request).toBe(`${server.url}/$export?_type=Patient,Observation`);
    expect(manifest.requiresAccessToken).toBe(true);
    expect(manifest.error).toEqual([]);
    for (const item of manifest.output) {
      expect(Object.keys(item).sort()).toEqual(['count', 'type', 'url']);
      expect(item.url).toMatch(/^https?:\/\//);
      expect(Number.isInteger(item.count)).toBe(true);
      // Inferno's download: Accept: application/fhir+ndjson, no Accept-Encoding → plain ndjson
      const file = await fetch(item.url, { headers: { ...ROOT, accept: 'application/fhir+ndjson', 'accept-encoding': '' } });
      expect(file.status).toBe(200);
      expect(file.headers.get('content-type')).toStartWith('application/fhir+ndjson');
      expect(file.headers.get('content-encoding')).toBeNull();
      const lines = (await file.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
      expect(lines).toHaveLength(item.count);
      for (const line of lines) expect(line.resourceType).toBe(item.type);
    }
  }, 60_000);

  test('DELETE after completion: 202; then the status URL and the files answer 404 + OperationOutcome', async () => {
    const done = await kickOff('/$export?_type=Patient');
    const statusUrl = done.headers.get('content-location')!;
    const manifest = await (await waitDone(statusUrl)).json();
    const del = await fetch(statusUrl, { method: 'DELETE', headers: ROOT });
    expect(del.status).toBe(202);
    const gone = await fetch(statusUrl, { headers: { ...ROOT, accept: 'application/json' } });
    expect(gone.status).toBe(404);
    expect((await gone.json()).resourceType).toBe('OperationOutcome');
    const file = await fetch(manifest.output[0].url, { headers: ROOT });
    expect(file.status).toBe(404);
    expect((await file.json()).resourceType).toBe('OperationOutcome');
    // a second DELETE: the export is gone
    expect((await fetch(statusUrl, { method: 'DELETE', headers: ROOT })).status).toBe(404);
  }, 60_000);

  test('a Group that does not exist: 404 + OperationOutcome at kick-off; an unknown status id: 404', async () => {
    const res = await kickOff('/Group/nobody/$export');
    expect(res.status).toBe(404);
    expect((await res.json()).resourceType).toBe('OperationOutcome');
    const status = await fetch(`${server.url}/$export-status/00000000-0000-0000-0000-000000000000`, { headers: { ...ROOT, accept: 'application/json' } });
    expect(status.status).toBe(404);
    expect((await status.json()).resourceType).toBe('OperationOutcome');
  }, 60_000);
});
