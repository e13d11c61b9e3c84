import { describe, expect, test } from 'bun:test';
import { OperationOutcomeError } from '../../src/fhir/outcome.ts';
import { dumpSqlRequest } from '../../src/operations/dump-sql.ts';
import { parseImportRequest } from '../../src/operations/import-request.ts';
import { parseLoadRequest } from '../../src/operations/load-request.ts';

function messageOf(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(OperationOutcomeError);
    expect((error as OperationOutcomeError).status).toBe(400);
    return (error as Error).message;
  }
  throw new Error('expected a 400');
}

describe('a request body that fails its schema names the field as a user writes it, for every operation', () => {
  test('$load: a missing, a mistyped, an unknown and an out-of-range field', () => {
    expect(messageOf(() => parseLoadRequest({}))).toBe('Invalid $load request: source is required');
    expect(messageOf(() => parseLoadRequest({ source: 'http://x/a.ndjson', update: 'yes' })))
      .toBe('Invalid $load request: update must be a boolean');
    expect(messageOf(() => parseLoadRequest({ source: 'http://x/a.ndjson', validation: { enable: 'on', bogus: 1 } })))
      .toBe('Invalid $load request: unknown field "bogus" in validation');
    expect(messageOf(() => parseLoadRequest({ source: 'http://x/a.ndjson', method: 'fast' })))
      .toBe('Invalid $load request: method must be one of copy, insert');
  });

  test('$import: array positions in brackets', () => {
    expect(messageOf(() => parseImportRequest({ id: 's1', inputs: [{ resourceType: 'Patient' }] })))
      .toBe('Invalid $import request: inputs[0].url is required');
  });

  test('$dump-sql: the same phrases', () => {
    expect(messageOf(() => dumpSqlRequest({}, null))).toBe('Invalid $dump-sql request: query is required');
    expect(messageOf(() => dumpSqlRequest({ query: 'select 1', header: 'yes' }, null)))
      .toBe('Invalid $dump-sql request: header must be a boolean');
    expect(messageOf(() => dumpSqlRequest({ query: '   ' }, null)))
      .toBe('Invalid $dump-sql request: query: must be a non-empty SQL query');
  });
});
