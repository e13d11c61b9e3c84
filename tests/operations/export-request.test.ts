/** $export kick-off (SPEC §12): every parameter, valid, invalid and lenient; who may export what. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { basic, startTestServer, type TestServer } from '../helpers/server.ts';
import { addClient } from '../helpers/clients.ts';
import { download, kickOff, outputByType, waitForManifest } from '../helpers/export.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
  const put = await server.request('/', { method: 'PUT', json: [
    { resourceType: 'Patient', id: 'p1', gender: 'female', birthDate: '1970-01-01', name: [{ family: 'One' }] },
    { resourceType: 'Patient', id: 'p2', gender: 'male', name: [{ family: 'Two' }] },
    { resourceType: 'Patient', id: 'p3', gender: 'male', name: [{ family: 'Three' }] },
    { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'bp' }, subject: { reference: 'Patient/p1' }, valueQuantity: { value: 1 }, note: [{ text: 'n' }] },
    { resourceType: 'Observation', id: 'o2', status: 'final', code: { text: 'hr' }, subject: { reference: 'Patient/p2' } },
    { resourceType: 'Condition', id: 'c1', subject: { reference: 'Patient/p1' } },
  ] });
  expect(put.status).toBe(200);
});
afterAll(async () => { await server.stop(); });

async function exportOf(pathname: string, init: RequestInit & { json?: unknown; auth?: string } = {}) {
  const manifest = await waitForManifest(server, await kickOff(server, pathname, init), init.auth ? { auth: init.auth } : {});
  return { manifest, files: await outputByType(server, manifest, init.auth) };
}

const ids = (lines: Record<string, unknown>[] | undefined) => (lines ?? []).map((l) => l.id).sort();

async function refused(pathname: string, init: RequestInit & { json?: unknown } = {}): Promise<{ status: number; message: string }> {
  const res = await server.request(pathname, { ...init, headers: { prefer: 'respond-async', ...(init.headers as Record<string, string>) } });
  const body = (await res.json()) as { resourceType: string; issue: { diagnostics: string }[] };
  expect(body.resourceType).toBe('OperationOutcome');
  expect(res.headers.get('content-location')).toBeNull();
  return { status: res.status, message: body.issue[0]!.diagnostics };
}

describe('$export kick-off: happy', () => {
  test('_type as one comma list, repeated, or both, selects exactly those types', async () => {
    for (const query of ['_type=Observation,Condition', '_type=Observation&_type=Condition', '_type=Observation,Condition&_type=Condition']) {
      const { files } = await exportOf(`/$export?${query}`);
      expect([...files.keys()].sort()).toEqual(['Condition', 'Observation']);
    }
  });

  test('_outputFormat accepts application/fhir+ndjson, application/ndjson and ndjson', async () => {
    for (const format of ['application/fhir+ndjson', 'application/ndjson', 'ndjson']) {
      const { manifest } = await exportOf(`/$export?_type=Condition&_outputFormat=${encodeURIComponent(format)}`);
      expect(manifest.output).toHaveLength(1);
    }
  });

  test('a kick-off without Prefer or Accept is taken as respond-async', async () => {
    const res = await server.request('/$export?_type=Condition');
    expect(res.status).toBe(202);
    expect(res.headers.get('content-location')).toContain('/$export-status/');
    expect((await res.json()).resourceType).toBe('OperationOutcome');
  });

  test('_since and _until select by lastUpdated', async () => {
    const [row] = await server.sql`select to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as ts from observation where id = 'o1'`;
    const later = new Date(Date.now() + 60_000).toISOString();
    expect(ids((await exportOf(`/$export?_type=Observation&_since=${later}`)).files.get('Observation'))).toEqual([]);
    expect(ids((await exportOf(`/$export?_type=Observation&_until=${later}`)).files.get('Observation'))).toEqual(['o1', 'o2']);
    expect(ids((await exportOf(`/$export?_type=Observation&_until=${row!.ts}`)).files.get('Observation'))).toEqual([]);
    expect(ids((await exportOf(`/$export?_type=Observation&_since=2000-01-01T00:00:00Z`)).files.get('Observation'))).toEqual(['o1', 'o2']);
  });

  test('_elements keeps the named root elements, id, meta and the mandatory ones, and tags SUBSETTED', async () => {
    const { files } = await exportOf('/$export?_type=Observation,Patient&_elements=Observation.status,gender');
    const o1 = files.get('Observation')!.find((o) => o.id === 'o1')!;
    expect(Object.keys(o1).sort()).toEqual(['code', 'id', 'meta', 'resourceType', 'status']);
    expect(o1.meta.tag).toContainEqual({ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' });
    expect(o1.meta.versionId).toBeString();
    const p1 = files.get('Patient')!.find((p) => p.id === 'p1')!;
    expect(Object.keys(p1).sort()).toEqual(['gender', 'id', 'meta', 'resourceType']);
    // a choice element by its name without [x]
    const value = await exportOf('/$export?_type=Observation&_elements=value');
    expect(Object.keys(value.files.get('Observation')!.find((o) => o.id === 'o1')!).sort()).toEqual(['code', 'id', 'meta', 'resourceType', 'valueQuantity']);
  });

  test('_typeFilter: queries on one type are OR-ed, parameters of one query AND-ed; other types unfiltered', async () => {
    const { files } = await exportOf(`/$export?_type=Patient,Observation&_typeFilter=${encodeURIComponent('Patient?_id=p1')},${encodeURIComponent('Patient?_id=p2,p3&_lastUpdated=gt2000-01-01')}`);
    expect(ids(files.get('Patient'))).toEqual(['p1', 'p2', 'p3']);
    expect(ids(files.get('Observation'))).toEqual(['o1', 'o2']);
    const narrow = await exportOf(`/$export?_type=Patient&_typeFilter=${encodeURIComponent('Patient?_id=p2')}&_typeFilter=${encodeURIComponent('Patient?_id=p3&_lastUpdated=lt2000-01-01')}`);
    expect(ids(narrow.files.get('Patient'))).toEqual(['p2']);
  });
});

describe('$export kick-off: errors', () => {
  const cases: [string, RequestInit & { json?: unknown }, number, string][] = [
    ['/$export?_outputFormat=text/csv', {}, 400, '_outputFormat "text/csv" is not supported'],
    ['/$export?_since=yesterday', {}, 400, '_since must be a FHIR instant like 2024-01-31T12:00:00Z, got "yesterday"'],
    ['/$export?_until=2024-13-01', {}, 400, '_until must be a FHIR instant'],
    ['/$export?_since=2024-01-01&_since=2024-02-01', {}, 400, 'Parameter _since was given 2 different values'],
    ['/$export?_type=Nope', {}, 400, '_type "Nope" is not a FHIR R4 resource type this server exports'],
    ['/$export?_type=Client', {}, 400, '_type "Client" is not a FHIR R4 resource type this server exports'],
    ['/Patient/$export?_type=Organization,Questionnaire', {}, 400, '_type Questionnaire is outside the Patient compartment'],
    ['/$export?_elements=Patient.name.given', {}, 400, '_elements "Patient.name.given" is not a root element'],
    ['/$export?_elements=Patient.nope', {}, 400, '_elements Patient.nope: Patient has no root element "nope"'],
    ['/$export?_typeFilter=Patient%3Fnope%3Dx', {}, 400, 'search parameter "nope" is not supported on Patient (supported on Patient: _id, _lastUpdated, active, address'],
    ['/$export?_typeFilter=Observation%3Fcode%3Atext%3Dbp', {}, 400, 'the modifier :text of token parameter "code" is not supported'],
    ['/$export?_typeFilter=Observation%3Fdate%3Dap2024', {}, 400, 'date "ap2024": the prefix ap is not supported'],
    ['/$export?_typeFilter=Observation%3Fsubject.name%3Dx', {}, 400, 'chained search parameter "subject.name" is not supported'],
    ['/$export?_typeFilter=Observation%3Fpatient%3DPractitioner%2F1', {}, 400, 'patient "Practitioner/1" must reference a Patient'],
    ['/$export?_typeFilter=Patient%3Factive%3Dyes', {}, 400, 'active takes true or false, got "yes"'],
    ['/$export?_typeFilter=Patient%3F_lastUpdated%3Dsoon', {}, 400, '_lastUpdated "soon" is not a FHIR date'],
    ['/$export?_type=Patient&_typeFilter=Observation%3F_id%3Do1', {}, 400, 'Observation is not among the exported types'],
    ['/$export?includeAssociatedData=LatestProvenanceResources', {}, 400, 'Parameter "includeAssociatedData" is not supported by $export'],
    ['/Patient/$export?patient=Patient/p1', {}, 400, 'Parameter "patient" is accepted in a POST Parameters body only'],
    ['/$export', { method: 'POST', json: { resourceType: 'Bundle' } }, 400, 'A POST $export body must be a FHIR Parameters resource'],
    ['/$export', { method: 'POST', json: { resourceType: 'Parameters', parameter: [{ name: 'patient', valueReference: { reference: 'Patient/p1' } }] } }, 400, 'Parameter "patient" applies to Patient- and Group-level exports only'],
    ['/Patient/$export', { method: 'POST', json: { resourceType: 'Parameters', parameter: [{ name: 'patient', valueReference: { reference: 'Patient/nobody' } }] } }, 400, 'patient Patient/nobody does not exist'],
    ['/Group/none/$export', {}, 404, 'Group/none not found'],
  ];
  for (const [pathname, init, status, message] of cases) {
    test(`${init.method ?? 'GET'} ${decodeURIComponent(pathname)}${init.json ? ' ' + JSON.stringify(init.json) : ''} → ${status} naming the problem`, async () => {
      const answer = await refused(pathname, init);
      expect(answer.status).toBe(status);
      expect(answer.message).toContain(message);
    });
  }
});

describe('$export kick-off: handling=lenient', () => {
  test('what cannot be honoured is dropped and reported, one OperationOutcome per problem in the error file', async () => {
    const query = '_type=Observation,Nope&_outputFormat=text/csv&includeAssociatedData=x&_typeFilter=' + encodeURIComponent('Observation?code:text=bp');
    const status = await kickOff(server, `/$export?${query}`, { headers: { prefer: 'respond-async, handling=lenient' } });
    const manifest = await waitForManifest(server, status);
    // the unsupported _typeFilter query matches nothing: it never widens the export
    expect(manifest.output).toEqual([]);
    expect(manifest.error).toHaveLength(1);
    expect(manifest.error[0]!.type).toBe('OperationOutcome');
    const outcomes = await download(server, manifest.error[0]!.url);
    expect(outcomes).toHaveLength(4);
    expect(manifest.error[0]!.count).toBe(4);
    const text = outcomes.map((o) => o.issue[0].diagnostics).join('\n');
    for (const part of ['includeAssociatedData', '"Nope"', 'text/csv', 'parameter "code"']) expect(text).toContain(part);
  });
});

describe('$export kick-off: security', () => {
  test('no or wrong credentials → 401', async () => {
    expect((await server.request('/$export', { auth: null })).status).toBe(401);
    expect((await server.request('/$export', { auth: basic('root', 'wrong') })).status).toBe(401);
  });

  test('GET /metadata answers without credentials and declares the Bulk Data operations', async () => {
    const res = await server.request('/metadata', { auth: null });
    expect(res.status).toBe(200);
    const cs = await res.json();
    expect(cs.instantiates).toContain('http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data');
    const definitions = cs.rest[0].operation.filter((o: { name: string }) => o.name === 'export').map((o: { definition: string }) => o.definition);
    expect(definitions).toEqual(['export', 'patient-export', 'group-export'].map((d) => `http://hl7.org/fhir/uv/bulkdata/OperationDefinition/${d}`));
    expect((await server.request('/metadata', { method: 'POST', auth: null })).status).toBe(401);
  });

  test('a client allowed only GET /Patient (and the kick-off) gets only Patients; an explicit other _type is 403', async () => {
    const client = await addClient(server, 'patients-only', [
      { engine: 'matcho', matcho: { uri: '#^/(\\$export|Patient)$', 'request-method': 'get' } },
    ]);
    const { manifest, files } = await exportOf('/$export', { auth: client.auth });
    expect([...files.keys()]).toEqual(['Patient']);
    expect(manifest.output.every((o) => o.type === 'Patient')).toBe(true);
    const res = await server.request('/$export?_type=Patient,Observation', { auth: client.auth });
    expect(res.status).toBe(403);
    expect((await res.json()).issue[0].diagnostics).toContain('_type Observation is not readable by this client');
    // a client whose policies do not allow the kick-off at all
    const none = await addClient(server, 'nothing', [{ engine: 'matcho', matcho: { uri: '/Patient', 'request-method': 'get' } }]);
    expect((await server.request('/$export', { auth: none.auth })).status).toBe(403);
  });

  test("another client's status, files and DELETE → 403; root may read them", async () => {
    const owner = await addClient(server, 'owner', [{ engine: 'allow' }]);
    const other = await addClient(server, 'other', [{ engine: 'allow' }]);
    const status = await kickOff(server, '/$export?_type=Patient', { auth: owner.auth });
    const manifest = await waitForManifest(server, status, { auth: owner.auth });
    const file = new URL(manifest.output[0]!.url).pathname;
    expect((await server.request(status, { auth: other.auth })).status).toBe(403);
    expect((await server.request(file, { auth: other.auth })).status).toBe(403);
    expect((await server.request(status, { method: 'DELETE', auth: other.auth })).status).toBe(403);
    expect((await server.request(file, { auth: null })).status).toBe(401);
    expect((await server.request(file, { auth: basic('owner', 'bad') })).status).toBe(401);
    expect((await server.request(file)).status).toBe(200);
    expect((await server.request(file, { auth: owner.auth })).status).toBe(200);
  });
});
