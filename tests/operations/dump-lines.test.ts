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

  test('stops at the first key longer than the one sought', () => {
    // a "resourceType" after a longer key cannot be top-level in jsonb's key order: not looked at
    expect(walk('{"supportingInfo": [], "resourceType": "X"}')).toBe('absent');
  });

  test('text not written as jsonb writes it is unsure, so the caller takes the slow path', () => {
    expect(walk('[{"resourceType": "X"}]')).toBe('unsure');
    expect(walk('{"a":1, "resourceType": "X"}')).toBe('unsure');
    expect(walk('{"a\\"b": 1, "resourceType": "X"}')).toBe('unsure');
    expect(walk('{"code": [1, 2')).toBe('unsure');
  });
});
