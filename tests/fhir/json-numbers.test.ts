/**
 * fhir/json-numbers.ts: the cheap test never misses a number a double would change, and the exact
 * parse gives every such number back as written.
 */
import { expect, test } from 'bun:test';
import { mayChangeNumbers, parseExact, parseKeepingNumbers } from '../../src/fhir/json-numbers.ts';
import { parseLine } from '../../src/operations/ingest.ts';

/** Number texts of every shape JSON allows, many of them not as a double writes them. */
function numberTexts(): string[] {
  const out = ['0', '-0', '0.0', '1.0', '1.50', '100', '1e2', '1E+2', '1.50e-3', '2.10e3', '0.000001', '0.0000001', '0.00000010',
    '9007199254740993', '12345678901234567890', '42.36036271434346', '0.30000000000000004', '123456789.123456789', '1e21', '1000000000000000000000'];
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const digits = (n: number) => Array.from({ length: n }, () => Math.floor(random() * 10)).join('');
  for (let i = 0; i < 3000; i++) {
    const int = String(Number(digits(1 + Math.floor(random() * 20))) || 0);
    const frac = random() < 0.7 ? `.${digits(1 + Math.floor(random() * 20))}` : '';
    const exp = random() < 0.1 ? `e${random() < 0.5 ? '-' : ''}${Math.floor(random() * 30)}` : '';
    out.push(`${random() < 0.2 ? '-' : ''}${int}${frac}${exp}`);
  }
  return out;
}

/** The text PostgreSQL's numeric prints for the JSON number `text` (its digits and its scale). */
function pgNumeric(text: string): string {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text)!;
  const frac = m[3] ?? '';
  let digits = m[2]! + frac;
  let scale = frac.length - Number(m[4] ?? 0);
  if (scale < 0) { digits += '0'.repeat(-scale); scale = 0; }
  const abs = BigInt(digits).toString().padStart(scale + 1, '0');
  const out = scale === 0 ? abs : `${abs.slice(0, -scale)}.${abs.slice(-scale)}`;
  return m[1] && /[1-9]/.test(out) ? `-${out}` : out;
}

test('every number whose double PostgreSQL would store differently is found, wherever it stands, and kept as written', () => {
  let changed = 0;
  for (const n of numberTexts()) {
    const double = String(Number(n));
    const places = [`{"a":${n}}`, `{"a": [1, ${n}]}`, `{"a":[${n},2],"b":{"c":${n} }}`, `{"resourceType":"Observation","valueQuantity":{"value":${n},"unit":"mg"}}`];
    // the one form left to the double (json-numbers.ts): an integer mantissa ending in 0 with a
    // negative exponent, `80e-21`, stored with scale 20 instead of 21
    const leftAlone = /^-?\d*0[eE]-/.test(n);
    for (const text of places) {
      if (pgNumeric(n) !== pgNumeric(double) && !leftAlone) {
        changed++;
        expect({ text, found: mayChangeNumbers(text) }).toEqual({ text, found: true });
        expect(JSON.stringify(parseExact(text))).toContain(n);
      }
    }
    // what the ingest stores (parse, then stringify) is, to PostgreSQL, the number as written
    const stored = JSON.stringify(parseKeepingNumbers(`{"a":${n}}`)).slice(5, -1);
    if (!leftAlone) expect({ n, stored: pgNumeric(stored) }).toEqual({ n, stored: pgNumeric(n) });
  }
  expect(changed).toBeGreaterThan(1000);
});

test('numbers as a double writes them, and digits inside strings, are not worth a second parse', () => {
  for (const text of [
    '{"resourceType":"Observation","valueQuantity":{"value":3.1,"unit":"mg"},"effectiveDateTime":"2011-07-14T06:51:16.000-04:00"}',
    '{"a":"1.0","b":"version 4.0.1","c":"urn:oid:2.16.840.1.113883.6.96","d":42.36036271434346,"e":-71.0589}',
    '{"a":[1,2,3],"b":{"c":0.5}}',
  ]) expect({ text, found: mayChangeNumbers(text) }).toEqual({ text, found: false });
});

test('a $load line keeps its numbers; merge, strip-nulls, meta and the checks work as on any line', () => {
  const line = (text: string, options = {}) => parseLine({ no: 1, text } as never, options);
  expect(line('{"resourceType":"Patient","id":"a","extension":[{"url":"u","valueDecimal":1.50}],"x":[0.0,null]}', { stripNulls: true, merge: { y: 2 } }))
    .toEqual({ ok: true, line: 1, type: 'Patient', id: 'a', json: '{"extension":[{"url":"u","valueDecimal":1.50}],"x":[0.0],"y":2}' });
  // meta.versionId/lastUpdated go to columns; a meta that is a number is not an object
  expect(line('{"resourceType":"Patient","id":"a","meta":{"versionId":"7","tag":[{"code":"t"}]},"v":10.0}')).toMatchObject({ ok: true, json: '{"meta":{"tag":[{"code":"t"}]},"v":10.0}' });
  expect(line('{"resourceType":"Patient","id":"a","meta":1.50,"v":1.0}')).toMatchObject({ ok: true, json: '{"v":1.0}' });
  // validation sees numbers, not the kept texts
  expect(line('{"resourceType":"Patient","id":"a","extension":[{"url":"u","valueDecimal":1.50}]}', { struct: true })).toMatchObject({ ok: true, json: '{"extension":[{"url":"u","valueDecimal":1.50}]}' });
  expect(line('{"resourceType":"Patient","id":"a","active":1.0}', { struct: true })).toMatchObject({ ok: false });
  // still refused: past a double's range, and a line that is a number
  expect(line('{"resourceType":"Patient","id":"a","x":1e400,"y":1.0}')).toMatchObject({ ok: false, message: 'holds a number too large to store (over 1.8e308)' });
  expect(line('1.50')).toMatchObject({ ok: false, message: 'not a JSON object' });
});

test('a line only stored (the swap) is stored exactly as the exact parse stores it, whatever surrounds its numbers', () => {
  const line = (text: string, options = {}) => parseLine({ no: 1, text } as never, options);
  let seed = 11;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const pick = <T>(list: T[]) => list[Math.floor(random() * list.length)]!;
  const numbers = ['0.0', '1.50', '-2.500', '12345678901234567890', '3.14159265358979323846', '1.50e-3', '7', '2.5', '1e400', '71933851140000', '-0.0'];
  const values = () => pick([
    () => pick(numbers),
    () => `"${pick(['x:1.50,y', 'a,0.0]', 'plain', '[1.0}', ':7193385114', '\\u0031.50', 'é:2.0,'])}"`,
    () => `[${pick(numbers)},${pick(numbers)}]`,
    () => `{"v":${pick(numbers)},"s":"${pick(['t:1.0,', 'q'])}"}`,
    () => 'null',
  ])();
  let swapped = 0;
  for (let i = 0; i < 3000; i++) {
    const members = [`"resourceType":"Observation"`, `"id":"o${i}"`];
    for (let k = 0, n = 1 + Math.floor(random() * 6); k < n; k++) members.push(`"${pick(['a', 'b', 'valueDecimal', 'note', '10', 'a'])}": ${values()}`);
    if (random() < 0.2) members.push(`"meta":{"versionId":${pick(['"3"', '1.0', '"x:1.50,"'])},"tag":[{"code":"${pick(['1.0', 'c'])}"}]}`);
    const text = `{${members.sort(() => random() - 0.5).join(random() < 0.5 ? ',' : ', ')}}`;
    const stored = line(text);
    const exact = line(text, { refs: true }); // refs: the exact parse
    expect({ text, stored: (stored as { json?: string }).json ?? stored }).toEqual({ text, stored: (exact as { json?: string }).json ?? exact });
    if (mayChangeNumbers(text)) swapped++;
  }
  expect(swapped).toBeGreaterThan(1000);
});
