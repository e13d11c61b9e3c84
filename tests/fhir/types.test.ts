import { describe, expect, test } from 'bun:test';
import fs from 'node:fs';
import {
  ALL_TYPES, RESOURCE_TYPES, SERVER_TYPES, historyTableOf, isFhirType, isKnownType, tableOf,
} from '../../src/fhir/types.ts';
import { FHIR_SCHEMA_PATH } from '../../src/fhir/validate.ts';

describe('resource types', () => {
  test('RESOURCE_TYPES is exactly the R4 schema discriminator mapping (146 types)', () => {
    const schema = JSON.parse(fs.readFileSync(FHIR_SCHEMA_PATH, 'utf8')) as {
      discriminator: { mapping: Record<string, string> };
    };
    expect([...RESOURCE_TYPES]).toEqual(Object.keys(schema.discriminator.mapping));
    expect(RESOURCE_TYPES).toHaveLength(146);
    expect(new Set(RESOURCE_TYPES).size).toBe(146);
  });

  test('ALL_TYPES adds the server types to the FHIR ones', () => {
    expect(ALL_TYPES).toHaveLength(149);
    expect(ALL_TYPES).toEqual(expect.arrayContaining([...SERVER_TYPES, 'Group', 'CarePlan', 'Patient']));
  });

  test('isKnownType knows FHIR and server types, isFhirType only FHIR ones', () => {
    for (const t of ['Group', 'CarePlan', 'Patient', 'Parameters']) expect(isKnownType(t)).toBe(true);
    for (const t of SERVER_TYPES) {
      expect(isKnownType(t)).toBe(true);
      expect(isFhirType(t)).toBe(false);
    }
    for (const t of ['patient', 'Resource', 'DomainResource', 'HumanName', '', 'toString', '__proto__']) {
      expect(isKnownType(t)).toBe(false);
    }
  });

  test('tables are the lower-case type names, history tables add _history', () => {
    expect(tableOf('CarePlan')).toBe('careplan');
    expect(tableOf('Group')).toBe('group');
    expect(tableOf('BulkImportStatus')).toBe('bulkimportstatus');
    expect(historyTableOf('Patient')).toBe('patient_history');
  });
});
