import { expect, test } from 'bun:test';
import { MAX_JSON_DEPTH, hasNonFinite, textDeeperThan, valueDeeperThan } from '../../src/fhir/json-shape.ts';

const nested = (depth: number) => '{"a":'.repeat(depth - 1) + '[]' + '}'.repeat(depth - 1);

test('200 levels are allowed and 201 are not, counted the same in text and in parsed values', () => {
  expect(MAX_JSON_DEPTH).toBe(200);
  for (const [depth, deeper] of [[200, false], [201, true], [100_000, true]] as const) {
    const text = nested(depth);
    expect({ depth, text: textDeeperThan(text) }).toEqual({ depth, text: deeper });
    expect({ depth, value: valueDeeperThan(JSON.parse(text)) }).toEqual({ depth, value: deeper });
  }
});

test('brackets inside strings, escaped quotes included, do not count', () => {
  expect(textDeeperThan(`{"a":"${'['.repeat(1000)}"}`)).toBe(false);
  expect(textDeeperThan(`{"a":"\\"${'{'.repeat(1000)}","b":"\\\\"}`)).toBe(false);
  // A string of closers cannot hide real nesting after it.
  expect(textDeeperThan(`{"a":"${']'.repeat(500)}","b":${'['.repeat(300)}${']'.repeat(300)}}`)).toBe(true);
});

test('numbers past a double are found, finite ones are not', () => {
  expect(hasNonFinite(JSON.parse('{"a":[1,{"b":1e999}]}'))).toBe(true);
  expect(hasNonFinite(JSON.parse('{"a":[1,{"b":-1e400}]}'))).toBe(true);
  expect(hasNonFinite(JSON.parse('{"a":[1.7e308,{"b":null,"c":"1e999"}]}'))).toBe(false);
});
