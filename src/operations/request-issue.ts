/**
 * The one way a request body that fails its zod schema is reported (`$load`, `$import`,
 * `$dump-sql`): the first issue, with the field written as a user writes it.
 */
import type { z } from 'zod';
import { invalid, type OperationOutcomeError } from '../fhir/outcome.ts';

/** `Invalid $load request: method must be one of copy, insert` (400). */
export function requestError(operation: string, error: z.ZodError): OperationOutcomeError {
  return invalid(`Invalid ${operation} request: ${describeIssue(error.issues[0]!)}`);
}

/**
 * One issue as a phrase: `inputs[0].url is required`, `unknown field "foo" in validation`,
 * `method must be one of copy, insert`, `update must be a boolean`, `query: must be a non-empty SQL query`.
 */
export function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.reduce<string>(
    (at, key) => (typeof key === 'number' ? `${at}[${key}]` : at ? `${at}.${String(key)}` : String(key)),
    '',
  );
  if (issue.code === 'unrecognized_keys') {
    const where = path ? ` in ${path}` : '';
    return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}${where}`;
  }
  if (issue.code === 'invalid_value' && 'values' in issue) {
    return `${path} must be one of ${issue.values.map(String).join(', ')}`;
  }
  if (issue.code === 'invalid_type') {
    if (issue.message.endsWith('received undefined')) return `${path} is required`;
    const expected = issue.expected === 'record' ? 'object' : issue.expected;
    return `${path} must be ${/^[aeiou]/.test(expected) ? 'an' : 'a'} ${expected}`;
  }
  return `${path || 'body'}: ${issue.message}`;
}
