/**
 * `_typeFilter` (SPEC §12, Bulk Data IG "_typeFilter"): token, date, reference and string search
 * parameters on the Synthea fixture patients, each export's files compared with an independent
 * filter of the fixture resources written here in plain JavaScript; several queries for a type
 * OR-ed, parameters within one AND-ed; CRUD search gives the same rows (one implementation).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import type { TestServer } from '../helpers/server.ts';
import { kickOff, outputByType, waitForManifest, download } from '../helpers/export.ts';
import { syntheaServer, type SyntheaPatient } from '../helpers/synthea-bundles.ts';

type R = Record<string, any>;
let server: TestServer;
let patients: SyntheaPatient[];
let all: R[];
beforeAll(async () => {
  ({ server, patients, all } = await syntheaServer());
}, 60_000);
afterAll(async () => { await server.stop(); });

// ---- the independent filter ----------------------------------------------------------------
const codings = (cc: unknown): R[] => (Array.isArray(cc) ? cc : cc ? [cc] : []).flatMap((c: R) => c.coding ?? []);
const hasCode = (cc: unknown, system: string | undefined, code: string) => codings(cc).some((c) => c.code === code && (system === undefined || c.system === system));
const at = (s: string) => Date.parse(s.length === 10 ? `${s}T00:00:00Z` : s);
const refersTo = (ref: R | undefined, target: string) => ref?.reference === target;
const ofType = (type: string) => all.filter((r) => r.resourceType === type);
const idSet = (rs: R[]) => new Set(rs.map((r) => r.id as string));

async function exported(query: string): Promise<Map<string, R[]>> {
  const manifest = await waitForManifest(server, await kickOff(server, query));
  expect(manifest.error).toEqual([]);
  return outputByType(server, manifest);
}
const tf = (...queries: string[]) => queries.map((q) => `_typeFilter=${encodeURIComponent(q)}`).join('&');
const idsOf = (files: Map<string, R[]>, type: string) => idSet(files.get(type) ?? []);

describe('_typeFilter on the Synthea patients', () => {
  test('token: system|code, a code alone, a comma list (OR), boolean-free codes; date with prefixes, AND-ed within a query', async () => {
    const files = await exported(`/$export?_type=Observation,Condition,MedicationRequest,Immunization&${tf(
      'Observation?code=http://loinc.org|8302-2',
      'Observation?category=laboratory&date=ge2014-01-01',
      'Condition?clinical-status=http://terminology.hl7.org/CodeSystem/condition-clinical|active',
      'MedicationRequest?status=active',
      'Immunization?vaccine-code=http://hl7.org/fhir/sid/cvx|140&date=lt2012',
    )}`);
    const observations = ofType('Observation').filter((o) => hasCode(o.code, 'http://loinc.org', '8302-2')
      || (hasCode(o.category, undefined, 'laboratory') && at(o.effectiveDateTime) >= at('2014-01-01')));
    expect(idsOf(files, 'Observation')).toEqual(idSet(observations));
    expect(observations.length).toBeGreaterThan(10);
    expect(observations.length).toBeLessThan(ofType('Observation').length);
    const conditions = ofType('Condition').filter((c) => hasCode(c.clinicalStatus, 'http://terminology.hl7.org/CodeSystem/condition-clinical', 'active'));
    expect(idsOf(files, 'Condition')).toEqual(idSet(conditions));
    expect(conditions).toHaveLength(1);
    // every MedicationRequest of the data is `stopped`: the filter ships none of them
    expect(files.has('MedicationRequest')).toBe(false);
    const immunizations = ofType('Immunization').filter((i) => hasCode(i.vaccineCode, 'http://hl7.org/fhir/sid/cvx', '140') && at(i.occurrenceDateTime) < at('2012-01-01T00:00:00Z'));
    expect(idsOf(files, 'Immunization')).toEqual(idSet(immunizations));
    expect(immunizations.length).toBeGreaterThan(0);
  }, 120_000);

  test('reference (Type/id and a bare id), Period dates, repeated date parameters, string (starts-with, any case) and :exact', async () => {
    const [a, b] = patients;
    const family: string = a!.resources.find((r) => r.resourceType === 'Patient')!.name[0].family;
    const files = await exported(`/$export?_type=Observation,Encounter,Procedure,Patient&${tf(
      `Observation?patient=Patient/${a!.patientId}&code=8302-2,29463-7`,
      `Observation?subject=${b!.patientId}&category=survey`,
      'Encounter?class=AMB&date=lt2012-01-01',
      'Procedure?date=ge2010-01-01&date=lt2016-01-01',
      `Patient?name=${family.slice(0, 3).toLowerCase()}`,
      'Patient?family:exact=Nobody',
    )}`);
    const observations = ofType('Observation').filter((o) =>
      (refersTo(o.subject, `Patient/${a!.patientId}`) && (hasCode(o.code, undefined, '8302-2') || hasCode(o.code, undefined, '29463-7')))
      || (refersTo(o.subject, `Patient/${b!.patientId}`) && hasCode(o.category, undefined, 'survey')));
    expect(idsOf(files, 'Observation')).toEqual(idSet(observations));
    expect(observations.length).toBeGreaterThan(2);
    const encounters = ofType('Encounter').filter((e) => e.class.code === 'AMB' && at(e.period.start) < at('2012-01-01T00:00:00Z'));
    expect(idsOf(files, 'Encounter')).toEqual(idSet(encounters));
    expect(encounters.length).toBeGreaterThan(0);
    const procedures = ofType('Procedure').filter((p) => {
      const start = at(p.performedPeriod?.start ?? p.performedDateTime);
      const end = at(p.performedPeriod?.end ?? p.performedDateTime);
      return end >= at('2010-01-01T00:00:00Z') && start < at('2016-01-01T00:00:00Z');
    });
    expect(idsOf(files, 'Procedure')).toEqual(idSet(procedures));
    const named = ofType('Patient').filter((p) => (p.name as R[]).some((n) => [n.family, ...(n.given ?? []), ...(n.prefix ?? []), ...(n.suffix ?? [])]
      .some((s: string) => s.toLowerCase().startsWith(family.slice(0, 3).toLowerCase()))));
    expect(idsOf(files, 'Patient')).toEqual(idSet(named));
    expect(named.length).toBeGreaterThan(0);
  }, 120_000);

  test('Patient level: the filters narrow the compartment types', async () => {
    const files = await exported(`/Patient/$export?_type=Patient,Observation,Practitioner&${tf('Patient?gender=male', 'Observation?category=vital-signs&date=ge2015')}`);
    expect(idsOf(files, 'Patient')).toEqual(idSet(ofType('Patient').filter((p) => p.gender === 'male')));
    const vital = ofType('Observation').filter((o) => hasCode(o.category, undefined, 'vital-signs') && at(o.effectiveDateTime) >= at('2015-01-01T00:00:00Z'));
    expect(idsOf(files, 'Observation')).toEqual(idSet(vital));
    expect(vital.length).toBeGreaterThan(0);
  }, 120_000);

  test('CRUD search answers the same rows for the same parameters', async () => {
    for (const [type, query] of [['Observation', 'category=laboratory&date=ge2014-01-01'], ['Encounter', 'class=AMB&date=lt2012-01-01'], ['Immunization', 'vaccine-code=http://hl7.org/fhir/sid/cvx|140']] as const) {
      const res = await server.request(`/${type}?${query}&_count=1000`);
      expect(res.status).toBe(200);
      const bundle = await res.json();
      const files = await exported(`/$export?_type=${type}&${tf(`${type}?${query}`)}`);
      expect(idSet(bundle.entry.map((e: R) => e.resource))).toEqual(idsOf(files, type));
      expect(bundle.entry.length).toBeGreaterThan(0);
    }
  }, 120_000);

  test('deleted (_since) is filtered the same way: only the deletions the query matches', async () => {
    const [a] = patients;
    const height = ofType('Observation').find((o) => refersTo(o.subject, `Patient/${a!.patientId}`) && hasCode(o.code, undefined, '8302-2'))!;
    const other = ofType('Observation').find((o) => refersTo(o.subject, `Patient/${a!.patientId}`) && !hasCode(o.code, undefined, '8302-2'))!;
    const first = await waitForManifest(server, await kickOff(server, '/$export?_type=Observation'));
    for (const o of [height, other]) expect((await server.request(`/Observation/${o.id}`, { method: 'DELETE' })).status).toBe(204);
    const manifest = await waitForManifest(server, await kickOff(server, `/$export?_type=Observation&_since=${first.transactionTime}&${tf('Observation?code=8302-2')}`));
    expect(manifest.deleted).toHaveLength(1);
    const bundles = await download(server, manifest.deleted[0]!.url);
    expect(bundles.map((b) => b.entry[0].request.url)).toEqual([`Observation/${height.id}`]);
  }, 120_000);

  test('lenient: a parameter that cannot be evaluated makes its query match nothing, and is reported', async () => {
    const status = await kickOff(server, `/$export?_type=Observation,Patient&${tf('Observation?code:below=8302', 'Patient?gender=female')}`, { headers: { prefer: 'respond-async, handling=lenient' } });
    const manifest = await waitForManifest(server, status);
    const files = await outputByType(server, manifest);
    expect(files.has('Observation')).toBe(false);
    expect(idsOf(files, 'Patient')).toEqual(idSet(ofType('Patient').filter((p) => p.gender === 'female')));
    const outcomes = await download(server, manifest.error[0]!.url);
    expect(outcomes[0]!.issue[0].diagnostics).toContain('the modifier :below of token parameter "code" is not supported');
  }, 120_000);

  test('a stored date that does not exist (2023-02-30) or is not a date matches no date query and fails nothing', async () => {
    await server.sql.unsafe(`insert into observation (id, txid, status, resource) values
      ('bad-date', 990001, 'created', '{"status": "final", "code": {"text": "x"}, "effectiveDateTime": "2023-02-30"}'),
      ('odd-date', 990002, 'created', '{"status": "final", "code": {"text": "x"}, "effectiveDateTime": {"not": "a date"}}'),
      ('ok-date', 990003, 'created', '{"status": "final", "code": {"text": "x"}, "effectiveDateTime": "2023-02-28"}')`);
    const files = await exported(`/$export?_type=Observation&${tf('Observation?date=ge2023-01-01')}`);
    expect([...idsOf(files, 'Observation')]).toEqual(['ok-date']);
    const search = await (await server.request('/Observation?date=2023-02')).json();
    expect(search.entry.map((e: R) => e.resource.id)).toEqual(['ok-date']);
  }, 120_000);
});
