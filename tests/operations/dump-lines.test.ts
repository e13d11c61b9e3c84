/** The `$dump` line splicer's structural walk over jsonb text (src/operations/dump-lines.ts). */
import { describe, expect, test } from 'bun:test';
import { topLevelKey } from '../../src/operations/dump-lines.ts';

const RESOURCE_TYPE = Buffer.from('"resourceType"');
const walk = (text: string) => topLevelKey(Buffer.from(`xx${text}yy`), 2, 2 + Buffer.byteLength(text), RESOURCE_TYPE);

describe('topLevelKey', () => {
  test('finds a top-level member among the shorter keys that come before it', () => {
    expect(walk('{"use": "x", "contained": [{"a": 1}], "resourceType": "Observation", "supportingInfo": []}')).toBe('present');
    expect(walk('{"resourceType": "Patient"}')).toBe('present');
  });

  test('a key nested in a member, or in a string, is not top-level', () => {
    expect(walk('{"use": "claim", "contained": [{"resourceType": "Coverage", "id": "c1"}], "supportingInfo": [{"sequence": 1}]}')).toBe('absent');
    expect(walk('{"note": [{"text": "\\"resourceType\\": \\"X\\""}], "status": "s"}')).toBe('absent');
    expect(walk('{"code": {"x": "} ] , \\"resourceType\\": 1"}, "contained": [[{"resourceType": "A"}]]}')).toBe('absent');
    expect(walk('{}')).toBe('absent');
  });

  test('walks from the last member and stops at the first key that sorts before the one sought', () => {
    // jsonb's order: a member before "resourceType" with a shorter key cannot hide it; a key found
    // after it in the walk (that is, before it in the text) is not looked at
    expect(walk('{"resourceType": "X", "use": 1}')).toBe('absent');
    expect(walk('{"use": 1, "resourceTypa": 2, "resourceType": "X", "resourceTypz": 3}')).toBe('present');
    expect(walk('{"use": 1, "resourceTypa": 2, "resourceTypz": 3}')).toBe('absent');
    // an ExplanationOfBenefit's shape: a big `item` early, contained resources, a longer key last
    const item = JSON.stringify(Array.from({ length: 50 }, (_, i) => ({ sequence: i, note: `"}], {"resourceType": ${i}` }))).replaceAll(':', ': ').replaceAll(',"', ', "');
    expect(walk(`{"use": "claim", "item": ${item}, "contained": [{"id": "c", "resourceType": "Coverage"}], "billablePeriod": {"end": "x"}}`)).toBe('absent');
    expect(walk(`{"use": "claim", "item": ${item}, "resourceType": "EOB", "billablePeriod": {"end": "x"}}`)).toBe('present');
  });

  test('values of every kind are skipped backwards: strings ending in escapes, scalars, nesting', () => {
    expect(walk('{"a": "x\\\\", "b": "\\"", "c": "\\\\\\"", "zzzzzzzzzzzzzz": 1}')).toBe('absent');
    expect(walk('{"a": true, "b": null, "c": -1.5, "resourceType": "X", "zzzzzzzzzzzzzz": false}')).toBe('present');
    expect(walk('{"resourceType": "X", "zzzzzzzzzzzzzz": [[{"a": "]"}], {"b": "{"}]}')).toBe('present');
    expect(walk('{"resourceType": "X", "zzzzzzzzzzzzzz": {"k": [1, {"resourceType": "Y"}]}}')).toBe('present');
    expect(walk('{"zzzzzzzzzzzzzz": {"k": [1, {"resourceType": "Y"}]}}')).toBe('absent');
  });

  test('text not written as jsonb writes it is never absent, so the caller takes the slow path', () => {
    expect(walk('[{"resourceType": "X"}]')).toBe('unsure');
    expect(walk('{"resourceType": "X", "b":1}')).toBe('unsure');
    expect(walk('{"a":1, "resourceType": "X"}')).not.toBe('absent');
    expect(walk('{"resourceType": "X", "a\\"b": 1}')).toBe('unsure');
    expect(walk('{"resourceType": "X", "zzzzzzzzzzzzzzzzzzzz\\"ab": 1}')).toBe('unsure');
    expect(walk('{"code": [1, 2')).toBe('unsure');
    expect(walk('{"resourceType": "X", "code": 1 2}')).not.toBe('absent');
    expect(walk('{"resourceType": "X", "zzzzzzzzzzzzzz": "unterminated}')).not.toBe('absent');
  });
});
