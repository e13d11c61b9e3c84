import { beforeAll, describe, expect, test } from 'bun:test';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { literalReferences, validateStruct } from '../../src/fhir/validate.ts';

const FIXTURES = join(import.meta.dir, '../fixtures/synthea');
const TWO_PATIENTS = join(FIXTURES, 'two-patients');

function resourcesOf(file: string): unknown[] {
  return readFileSync(file, 'utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line));
}

/** Every message for the lines of an ndjson file that fail, with the line number. */
function failuresOf(file: string): string[] {
  return resourcesOf(file).flatMap((resource, i) => {
    const message = validateStruct(resource);
    return message === null ? [] : [`line ${i + 1}: ${message}`];
  });
}

// The first validation compiles the whole R4 schema: about 2 s idle, but it is one long burst of
// allocation in a process that holds the whole suite's heap, and beside two CPU burners it took
// over 60 s once. A bound, not an expectation.
beforeAll(() => {
  validateStruct({ resourceType: 'Patient' });
}, 240_000);

describe('validateStruct accepts real Synthea data', () => {
  for (const name of ['AllergyIntolerance.000.ndjson', 'Patient.000.ndjson']) {
    test(`fixture ${name}`, () => {
      expect(resourcesOf(join(FIXTURES, name)).length).toBeGreaterThan(10);
      expect(failuresOf(join(FIXTURES, name))).toEqual([]);
    });
  }

  test('every file of the two-patient subset (13 resource types)', () => {
    const files = readdirSync(TWO_PATIENTS).filter((f) => f.endsWith('.ndjson'));
    expect(files).toHaveLength(13);
    for (const file of files) expect({ file, failures: failuresOf(join(TWO_PATIENTS, file)) }).toEqual({ file, failures: [] });
  }, 60_000);
});

describe('validateStruct rejects with the path and the value', () => {
  test('valid without id or meta, and with them', () => {
    expect(validateStruct({ resourceType: 'Patient' })).toBeNull();
    expect(validateStruct({ resourceType: 'Patient', name: [{ family: 'John' }] })).toBeNull();
    expect(validateStruct({
      resourceType: 'Patient', id: 'p-1', meta: { versionId: '12', lastUpdated: '2024-01-02T03:04:05.678Z' },
    })).toBeNull();
  });

  test('an unknown field is named', () => {
    expect(validateStruct({ resourceType: 'Patient', foo: 1 })).toBe('Patient: unknown field "foo"');
    expect(validateStruct({ resourceType: 'Patient', name: [{ family: 'A', nickname: 'B' }] }))
      .toBe('Patient.name[0]: unknown field "nickname"');
  });

  test('a value of the wrong JSON type', () => {
    expect(validateStruct({ resourceType: 'Patient', active: 'yes' })).toBe('Patient.active: "yes" is not a boolean');
    expect(validateStruct({ resourceType: 'Patient', name: [{ given: ['Ann', 3] }] }))
      .toBe('Patient.name[0].given[1]: 3 is not a string');
    expect(validateStruct({ resourceType: 'Patient', name: { family: 'A' } }))
      .toBe('Patient.name: {"family":"A"} is not an array');
    expect(validateStruct({ resourceType: 'Patient', birthDate: null })).toBe('Patient.birthDate: null is not a string');
  });

  test('a string where a complex type belongs (stricter than the bare official schema)', () => {
    expect(validateStruct({ resourceType: 'Observation', status: 'final', code: '1234-5' }))
      .toBe('Observation.code: "1234-5" is not an object');
    expect(validateStruct({ resourceType: 'Patient', meta: 'x' })).toBe('Patient.meta: "x" is not an object');
  });

  test('a value that breaks a FHIR primitive pattern', () => {
    expect(validateStruct({ resourceType: 'Patient', birthDate: '1990-13-45' }))
      .toBe('Patient.birthDate: "1990-13-45" does not match the FHIR date pattern');
    expect(validateStruct({ resourceType: 'Patient', id: 'has space' }))
      .toBe('Patient.id: "has space" does not match the FHIR id pattern');
  });

  test('a code outside its value set and a missing required field', () => {
    expect(validateStruct({ resourceType: 'Patient', gender: 'x' }))
      .toBe('Patient.gender: "x" is not one of male, female, other, unknown');
    expect(validateStruct({ resourceType: 'Observation', status: 'final' }))
      .toBe('Observation: missing required field "code"');
  });

  test('an unknown, missing or non-FHIR resourceType, or no object at all', () => {
    expect(validateStruct({ resourceType: 'Foo' })).toBe('unknown resourceType "Foo"');
    expect(validateStruct({ resourceType: 'Client' })).toBe('unknown resourceType "Client" (not a FHIR R4 resource)');
    expect(validateStruct({ id: '1' })).toBe('resource has no resourceType');
    expect(validateStruct([])).toBe('resource is not a JSON object');
    expect(validateStruct(null)).toBe('resource is not a JSON object');
  });

  test('nested resources are explained against their own type, not the 146-way oneOf', () => {
    expect(validateStruct({ resourceType: 'Patient', contained: [{ resourceType: 'Organization', name: 5 }] }))
      .toBe('Patient.contained[0].name: 5 is not a string');
    expect(validateStruct({ resourceType: 'Patient', contained: [{ resourceType: 'Foo' }] }))
      .toBe('Patient.contained[0]: unknown resourceType "Foo"');
    expect(validateStruct({
      resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Patient', birthDate: '1990-13-45' } }],
    })).toBe('Bundle.entry[0].resource.birthDate: "1990-13-45" does not match the FHIR date pattern');
  });

  test('a huge value is cut short in the message', () => {
    const message = validateStruct({ resourceType: 'Patient', active: 'y'.repeat(10_000) });
    expect(message).toStartWith('Patient.active: "yyy');
    expect(message!.length).toBeLessThan(150);
  });
});

describe('literalReferences', () => {
  // Reference strings exactly as Synthea writes them (10-patients/Encounter.000.ndjson).
  const encounter = {
    resourceType: 'Encounter',
    subject: { reference: 'Patient/79a66c97-6131-3213-f3c9-4606946ab056', display: 'Mr. X' },
    participant: [{ individual: { reference: 'Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999974493' } }],
    location: [{ location: { reference: 'Location?identifier=https://github.com/synthetichealth/synthea|3b23bdf7-5bd6-30bf-85a9-a37d7d74938a' } }],
    serviceProvider: { reference: 'Organization?identifier=https://github.com/synthetichealth/synthea|a261e1fc-9361-3633-a2c4-8569a04b818d' },
  };

  test('Synthea conditional references are skipped, the literal one is kept', () => {
    expect(literalReferences(encounter)).toEqual(['Patient/79a66c97-6131-3213-f3c9-4606946ab056']);
  });

  test('urn:, #contained, absolute URLs and unknown types are skipped', () => {
    expect(literalReferences({
      resourceType: 'Claim',
      patient: { reference: 'urn:uuid:79a66c97-6131-3213-f3c9-4606946ab056' },
      provider: { reference: 'urn:oid:1.2.3' },
      prescription: { reference: '#referral' },
      insurer: { reference: 'http://example.org/fhir/Organization/1' },
      facility: { reference: 'https://example.org/fhir/Location/1' },
      enterer: { reference: 'Foo/1' },
      referral: { reference: 'Patient/123' },
    })).toEqual(['Patient/123']);
  });

  test('nested and array references are found, versions dropped, duplicates once', () => {
    const refs = literalReferences({
      resourceType: 'CarePlan',
      subject: { reference: 'Patient/123/_history/4' },
      careTeam: [{ reference: 'CareTeam/ct-1' }, { reference: 'CareTeam/ct-2' }],
      activity: [{ detail: { performer: [{ reference: 'Practitioner/pr.1' }], location: { reference: 'Patient/123' } } }],
      contained: [{ resourceType: 'Goal', addresses: [{ reference: 'Condition/c1' }] }],
    });
    expect(refs.sort()).toEqual(['CareTeam/ct-1', 'CareTeam/ct-2', 'Condition/c1', 'Patient/123', 'Practitioner/pr.1']);
  });

  test('non-string reference values and scalars are ignored', () => {
    expect(literalReferences({ reference: 5, a: { reference: null }, b: [1, 'Patient/1', { reference: ['Patient/2'] }] }))
      .toEqual([]);
    expect(literalReferences('Patient/1')).toEqual([]);
    expect(literalReferences(null)).toEqual([]);
  });

  test('a real Synthea Encounter file yields only Type/id references', () => {
    const file = join(TWO_PATIENTS, 'Encounter.000.ndjson');
    const encounters = resourcesOf(file);
    const refs = encounters.flatMap((resource) => literalReferences(resource));
    // One literal reference (the Patient) per Encounter; the conditional Practitioner,
    // Location and Organization references are not literal.
    expect(encounters).toHaveLength(30);
    expect(refs).toHaveLength(30);
    for (const ref of refs) expect(ref).toMatch(/^(Patient|Encounter|Condition)\/[0-9a-f-]{36}$/);
  });
});
