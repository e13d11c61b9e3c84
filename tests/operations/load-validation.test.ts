import { afterAll, beforeAll, beforeEach, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { ndjson, serveSources, type SourceServer } from '../helpers/sources.ts';
import { within } from '../helpers/wait.ts';

let server: TestServer;
let sources: SourceServer;
beforeAll(async () => { server = await startTestServer(); sources = serveSources(); });
afterAll(async () => { sources.stop(); await server.stop(); });
beforeEach(async () => { await server.sql`truncate patient, allergyintolerance, observation, operationoutcome, operationoutcome_history`; });

const FIXTURES = path.join(import.meta.dir, '..', 'fixtures', 'synthea');
const fixture = (name: string) => sources.put(`/${name}`, fs.readFileSync(path.join(FIXTURES, name)), { gzip: true });

async function load(body: unknown, pathname = '/$load') {
  const res = await server.request(pathname, { method: 'POST', json: body });
  return { status: res.status, body: await res.json() as Record<string, any> };
}

const invalidPatients = [
  { resourceType: 'Patient', id: 'ok', gender: 'female', birthDate: '1990-01-02' },
  { resourceType: 'Patient', id: 'unknown-field', favouriteColour: 'blue' },
  { resourceType: 'Patient', id: 'wrong-type', name: 'Jane Doe' },
  { resourceType: 'Patient', id: 'bad-date', birthDate: '1990-13-45' },
];

const refs = (id: string, reference: string) => ({ resourceType: 'Observation', id, status: 'final', code: { text: 'x' }, subject: { reference } });

test('validation on, checks struct: the Synthea fixtures pass', async () => {
  for (const [name, type] of [['Patient.000.ndjson', 'Patient'], ['AllergyIntolerance.000.ndjson', 'AllergyIntolerance']] as const) {
    const lines = fs.readFileSync(path.join(FIXTURES, name), 'utf8').trim().split('\n').length;
    const { status, body } = await load({ source: fixture(name), validation: { enable: 'on', checks: 'struct' } });
    expect(status).toBe(200);
    expect(body).toEqual({ [type]: lines });
  }
}, 60_000); // the first validation compiles the R4 schema: 2-4 s, more on a busy machine

test('validation on, checks struct: unknown field, wrong type and bad date are skipped with the path in the message', async () => {
  const { body } = await load({ source: sources.put('/invalid.ndjson', ndjson(invalidPatients)), validation: { enable: 'on' } });
  expect(body.Patient).toBe(1);
  expect(body.errorCount).toBe(3);
  expect(body.errors).toEqual([
    { line: 2, message: 'Patient: unknown field "favouriteColour"' },
    { line: 3, message: expect.stringContaining('Patient.name') },
    { line: 4, message: 'Patient.birthDate: "1990-13-45" does not match the FHIR date pattern' },
  ]);
  expect((await server.sql`select id from patient`).map((r) => r.id)).toEqual(['ok']);
});

test('validation off (the default) loads invalid resources as they are, as Aidbox does', async () => {
  expect((await load({ source: sources.put('/invalid-off.ndjson', ndjson(invalidPatients)) })).body).toEqual({ Patient: 4 });
});

test('checks refs: a missing target is reported; stored targets, targets in the same load, conditional, absolute, urn and contained references are fine', async () => {
  await load({ source: sources.put('/stored.ndjson', ndjson([{ resourceType: 'Patient', id: 'stored' }])) });
  const lines = [
    refs('o1', 'Patient/stored'),
    refs('o2', 'Patient/same-load'),
    refs('o3', 'Patient/missing'),
    refs('o4', 'Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999974493'),
    refs('o5', 'https://other.example/fhir/Patient/far'),
    refs('o6', 'urn:uuid:8c3c3f7a-3b5e-4c1f-9b1e-000000000000'),
    { ...refs('o7', '#p'), contained: [{ resourceType: 'Patient', id: 'p' }] },
    refs('o8', 'Patient/stored/_history/1'),
    { ...refs('o9', 'Patient/missing'), performer: [{ reference: 'Organization/nowhere' }] },
    { resourceType: 'Patient', id: 'same-load' },
  ];
  const { body } = await load({ source: sources.put('/refs.ndjson', ndjson(lines)), validation: { enable: 'on', checks: 'refs' } });
  expect(body).toEqual({
    Observation: 7, Patient: 1, errorCount: 2,
    errors: [
      { line: 3, message: 'reference Patient/missing does not resolve to a stored resource or one in this load' },
      { line: 9, message: 'reference Organization/nowhere, Patient/missing do not resolve to a stored resource or one in this load' },
    ],
  });
  expect((await server.sql`select count(*)::int as n from observation where id in ('o3', 'o9')`)[0]!.n).toBe(0);
});

test('checks all: schema and references together, in line order; the Synthea allergies resolve once their patients are loaded', async () => {
  const bad = await load({ source: fixture('AllergyIntolerance.000.ndjson'), validation: { enable: 'on', checks: 'all' } });
  expect(bad.body.AllergyIntolerance).toBeUndefined();
  expect(bad.body.errorCount).toBe(11);
  await load({ source: fixture('Patient.000.ndjson'), validation: { enable: 'on', checks: 'all' } });
  expect((await load({ source: fixture('AllergyIntolerance.000.ndjson'), validation: { enable: 'on', checks: 'all' } })).body).toEqual({ AllergyIntolerance: 11 });
  const mixed = [refs('a', 'Patient/nobody'), { resourceType: 'Patient', id: 'x', birthDate: 'yesterday' }, refs('b', 'Patient/x')];
  const { body } = await load({ source: sources.put('/mixed.ndjson', ndjson(mixed)), validation: { enable: 'on', checks: 'all' } }, '/$load');
  // A resource skipped for its schema is not in the load, so references to it do not resolve.
  expect(body.errors.map((e: { line: number }) => e.line)).toEqual([1, 2, 3]);
  expect(body.errors[2].message).toContain('Patient/x does not resolve');
  expect(body.Observation).toBeUndefined();
});

async function outcomeWhenDone(location: string): Promise<Record<string, any>> {
  let outcome: Record<string, any> = {};
  await within(30_000, async () => {
    outcome = await (await server.request(location)).json() as Record<string, any>;
    return outcome.issue[0].details.coding[0].code !== 'running';
  }, `the background validation of ${location} finished`);
  return outcome;
}

test('validation async: everything loads, the findings are stored in an OperationOutcome the answer points to', async () => {
  const lines = [...invalidPatients, refs('o1', 'Patient/ok'), refs('o2', 'Patient/ghost')];
  const { status, body } = await load({ source: sources.put('/async.ndjson', ndjson(lines)), validation: { enable: 'async', checks: 'all' } });
  expect(status).toBe(200);
  const location = String(body.validation?.outcome);
  expect(location).toMatch(/^\/OperationOutcome\/load-[0-9a-f-]{36}$/);
  expect(body).toEqual({ Patient: 4, Observation: 2, validation: { status: 'running', checks: 'all', outcome: location } });
  const outcome = await outcomeWhenDone(location);
  expect(outcome.issue[0]).toMatchObject({ severity: 'information', details: { coding: [{ code: 'done' }] } });
  expect(outcome.issue[0].diagnostics).toContain('4 invalid');
  expect(outcome.issue.slice(1).map((i: { diagnostics: string }) => i.diagnostics)).toEqual([
    'line 2: Patient: unknown field "favouriteColour"',
    expect.stringMatching(/^line 3: Patient.name/),
    'line 4: Patient.birthDate: "1990-13-45" does not match the FHIR date pattern',
    'line 6: reference Patient/ghost does not resolve to a stored resource or one in this load',
  ]);
  expect((await server.sql`select count(*)::int as n from patient`)[0]!.n).toBe(4);
  const history = await (await server.request(`${location}/_history`)).json() as { entry: unknown[] };
  expect(history.entry.length).toBe(2);
  // The scratch staging table is gone once the validation is done.
  expect((await server.sql`select count(*)::int as n from pg_class where relname like '_fhirhose_stage_%'`)[0]!.n).toBe(0);
});

test('validation async with temp_table keeps the table, with the reasons in its error column', async () => {
  const { body } = await load({ source: sources.put('/async-kept.ndjson', ndjson(invalidPatients)), temp_table: '_async_stage', validation: { enable: 'async' } }, '/Patient/$load');
  expect(body.total).toBe(4);
  const outcome = await outcomeWhenDone(body.validation.outcome);
  expect(outcome.issue.length).toBe(4);
  const rows = await server.sql`select line, error from _async_stage order by line`;
  expect(rows.map((r) => [r.line, r.error === null])).toEqual([[1, true], [2, false], [3, false], [4, false]]);
});
