/** $export at Patient and Group level (SPEC §12) on Synthea patients: each compartment, nobody else's data. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import type { TestServer } from '../helpers/server.ts';
import { kickOff, outputByType, waitForManifest } from '../helpers/export.ts';
import { syntheaServer, type SyntheaPatient } from '../helpers/synthea-bundles.ts';

let server: TestServer;
let patients: SyntheaPatient[];
let all: Record<string, any>[];
beforeAll(async () => {
  ({ server, patients, all } = await syntheaServer());
  const [a, b, c] = patients.map((p) => p.patientId);
  await server.request('/', { method: 'PUT', json: [
    // a Group of A and B, B no longer active, plus a member that is not a Patient
    { resourceType: 'Group', id: 'cohort', type: 'person', actual: true, member: [
      { entity: { reference: `Patient/${a}` } },
      { entity: { reference: `Patient/${b}` }, inactive: true },
      { entity: { reference: 'Practitioner/someone' } },
    ] },
    { resourceType: 'Group', id: 'everyone', type: 'person', actual: true, member: [a, b, c].map((id) => ({ entity: { reference: `Patient/${id}` } })) },
  ] });
}, 60_000);
afterAll(async () => { await server.stop(); });

const idsOf = (lines: Record<string, any>[] | undefined) => new Set((lines ?? []).map((l) => l.id as string));
/** The resources of a patient's Bundle of one type (Synthea puts each patient's own data in its Bundle). */
const own = (p: SyntheaPatient, type: string) => new Set(p.resources.filter((r) => r.resourceType === type).map((r) => r.id as string));
const union = (...sets: Set<string>[]) => new Set(sets.flatMap((s) => [...s]));

async function dumpById(type: string): Promise<Map<string, Record<string, unknown>>> {
  const res = await server.request(`/${type}/$dump`, { headers: { 'accept-encoding': 'identity' } });
  return new Map((await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l)).map((r) => [r.id, r]));
}

/** `Type/id` references of the given types found anywhere in the lines. */
function referenced(lines: Record<string, any>[], types: string[]): Set<string> {
  const out = new Set<string>();
  for (const l of lines) for (const m of JSON.stringify(l).matchAll(/"reference":"([A-Za-z]+)\/([A-Za-z0-9.-]+)"/g)) if (types.includes(m[1]!)) out.add(`${m[1]}/${m[2]}`);
  return out;
}

describe('$export Patient level', () => {
  test('every Patient with all their Encounters and Observations, the resources they reference, no server types', async () => {
    const manifest = await waitForManifest(server, await kickOff(server, '/Patient/$export'));
    const files = await outputByType(server, manifest);
    expect(idsOf(files.get('Patient'))).toEqual(union(...patients.map((p) => own(p, 'Patient'))));
    expect(idsOf(files.get('Encounter'))).toEqual(union(...patients.map((p) => own(p, 'Encounter'))));
    expect(idsOf(files.get('Observation'))).toEqual(union(...patients.map((p) => own(p, 'Observation'))));
    expect(idsOf(files.get('Claim'))).toEqual(union(...patients.map((p) => own(p, 'Claim'))));
    // the Practitioners and Organizations the exported resources reference, and those only
    const lines = [...files.values()].flat();
    for (const type of ['Practitioner', 'Organization']) {
      // (the Group's reference to a Practitioner that does not exist has nothing to ship)
      const exists = new Set(all.filter((r) => r.resourceType === type).map((r) => r.id));
      const expected = [...referenced(lines.filter((l) => l.resourceType !== type), [type])].map((r) => r.split('/')[1]!).filter((id) => exists.has(id));
      expect(idsOf(files.get(type))).toEqual(new Set(expected));
      expect(expected.length).toBeGreaterThan(0);
    }
    expect(files.has('Group')).toBe(true); // Group is in the compartment (member)
    for (const type of files.keys()) expect(['Client', 'AccessPolicy', 'Questionnaire']).not.toContain(type);
    // each line is the $dump line of the same resource
    for (const [type, exported] of files) {
      const dumped = await dumpById(type);
      for (const line of exported) expect(line).toEqual(dumped.get(line.id)!);
    }
  });
});

describe('$export Group level', () => {
  test('the active Patient members only: their compartments, nobody else’s Encounters or Observations', async () => {
    const [a, b, c] = patients;
    const manifest = await waitForManifest(server, await kickOff(server, '/Group/cohort/$export?_type=Patient,Encounter,Observation,Practitioner'));
    const files = await outputByType(server, manifest);
    expect(idsOf(files.get('Patient'))).toEqual(own(a!, 'Patient'));
    expect(idsOf(files.get('Encounter'))).toEqual(own(a!, 'Encounter'));
    expect(idsOf(files.get('Observation'))).toEqual(own(a!, 'Observation'));
    for (const other of [b!, c!]) for (const type of ['Encounter', 'Observation']) for (const id of own(other, type)) expect(idsOf(files.get(type)).has(id)).toBe(false);
    for (const line of files.get('Observation')!) expect(line.subject.reference).toBe(`Patient/${a!.patientId}`);
    const lines = [...files.values()].flat();
    const practitioners = [...referenced(lines, ['Practitioner'])].map((r) => r.split('/')[1]!);
    expect(idsOf(files.get('Practitioner'))).toEqual(new Set(practitioners));
    expect([...files.keys()].sort()).toEqual(['Encounter', 'Observation', 'Patient', 'Practitioner']);
  });

  test('POST with `patient` narrows a Group export to those members; a non-member is refused', async () => {
    const [a, b, c] = patients;
    const body = (ids: string[]) => ({ resourceType: 'Parameters', parameter: [
      { name: '_type', valueString: 'Patient,Observation' },
      ...ids.map((id) => ({ name: 'patient', valueReference: { reference: `Patient/${id}` } })),
    ] });
    const manifest = await waitForManifest(server, await kickOff(server, '/Group/everyone/$export', { method: 'POST', json: body([c!.patientId]) }));
    const files = await outputByType(server, manifest);
    expect(idsOf(files.get('Patient'))).toEqual(own(c!, 'Patient'));
    expect(idsOf(files.get('Observation'))).toEqual(own(c!, 'Observation'));
    const res = await server.request('/Group/cohort/$export', { method: 'POST', json: body([b!.patientId]) });
    expect(res.status).toBe(400);
    expect((await res.json()).issue[0].diagnostics).toContain(`patient Patient/${b!.patientId} is not a member of the exported Group`);
    void a;
  });

  test('POST /Patient/$export with `patient`: that patient’s compartment only', async () => {
    const [, b] = patients;
    const manifest = await waitForManifest(server, await kickOff(server, '/Patient/$export', { method: 'POST', json: {
      resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Encounter' }, { name: 'patient', valueReference: { reference: `Patient/${b!.patientId}` } }],
    } }));
    const files = await outputByType(server, manifest);
    expect(idsOf(files.get('Encounter'))).toEqual(own(b!, 'Encounter'));
  });
});
