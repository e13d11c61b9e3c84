import { expect, test } from 'bun:test';
import { parseLine, stripNulls } from '../../src/operations/ingest.ts';
import type { Json } from '../../src/fhir/resource.ts';

const line = (text: string, no = 7) => ({ no, text });

test('a good line becomes the stored JSON: no id, resourceType, meta.versionId or meta.lastUpdated', () => {
  const parsed = parseLine(line(JSON.stringify({
    resourceType: 'Patient', id: 'p1', meta: { versionId: '3', lastUpdated: '2020-01-01T00:00:00Z', source: 's' }, active: true,
  })), {});
  expect(parsed).toEqual({ ok: true, line: 7, type: 'Patient', id: 'p1', json: '{"meta":{"source":"s"},"active":true}' });
  const bare = parseLine(line('{"resourceType":"Patient","id":"p2","meta":{"versionId":"1"}}'), {});
  expect(bare).toMatchObject({ ok: true, json: '{}' });
});

test('every kind of bad line is reported with its line number and reason', () => {
  const cases: [string, string][] = [
    ['{"resourceType":"Patient",', 'invalid JSON'],
    ['[1,2]', 'not a JSON object'],
    ['{"id":"x"}', 'resourceType is missing'],
    ['{"resourceType":"Pationt","id":"x"}', 'unknown resourceType "Pationt"'],
    ['{"resourceType":"Client","id":"x"}', 'server type'],
    ['{"resourceType":"Patient"}', 'id is missing'],
    ['{"resourceType":"Patient","id":"a b"}', 'not a valid FHIR id'],
    ['{"resourceType":"Patient","id":"a","name":[{"text":"\\u0000"}]}', '\\u0000'],
    ['{"resourceType":"Patient","id":"a","name":[{"text":"\\ud800"}]}', 'surrogate'],
    ['{"resourceType":"Patient","id":"a","name":[{"text":"\0"}]}', 'invalid JSON'],
    [`{"resourceType":"Patient","id":"a","extension":${'['.repeat(100_000)}${']'.repeat(100_000)}}`, 'nested deeper than 200 levels'],
    [`{"resourceType":"Patient","id":"a","x":${'{"a":'.repeat(201)}1${'}'.repeat(201)}}`, 'nested deeper than 200 levels'],
    ['{"resourceType":"Patient","id":"a","multipleBirthInteger":1e999999}', 'number too large'],
    ['{"resourceType":"Patient","id":"a","x":[-1E400]}', 'number too large'],
    [`{"resourceType":"Patient","id":"a","x":${'9'.repeat(400)}}`, 'number too large'],
  ];
  for (const [text, reason] of cases) {
    const parsed = parseLine(line(text, 12), {});
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) {
      expect(parsed.line).toBe(12);
      expect(parsed.message).toContain(reason);
    }
  }
  expect(parseLine({ no: 4, notText: true }, {})).toEqual({ ok: false, line: 4, message: 'line is not valid UTF-8 text' });
  expect(parseLine({ no: 3, tooLong: true }, { maxLineBytes: 1024 })).toEqual({
    ok: false, line: 3, message: 'line is longer than the limit of 1024 bytes (FHIRHOSE_MAX_LINE_BYTES)',
  });
});

test('an escaped backslash before u0000 and paired surrogates are fine', () => {
  expect(parseLine(line('{"resourceType":"Patient","id":"a","text":"\\\\u0000 \\ud83d\\ude00"}'), {}).ok).toBe(true);
});

test('the URL type fills a missing resourceType and refuses a different one', () => {
  expect(parseLine(line('{"id":"a"}'), { urlType: 'Patient' })).toMatchObject({ ok: true, type: 'Patient', json: '{}' });
  expect(parseLine(line('{"resourceType":"Observation","id":"a"}'), { urlType: 'Patient' })).toMatchObject({
    ok: false, message: 'resourceType "Observation" does not match the URL\'s type "Patient"',
  });
});

test('merge is shallow and strip-nulls drops nulls and what they leave empty', () => {
  const parsed = parseLine(line('{"resourceType":"Patient","id":"a","gender":null,"name":[{"given":[null]},{"family":"F","text":null}],"active":false}'), {
    merge: { active: true, meta: { tag: [{ code: 'loaded' }] } }, stripNulls: true,
  });
  expect(parsed).toMatchObject({ ok: true });
  if (parsed.ok) expect(JSON.parse(parsed.json)).toEqual({ name: [{ family: 'F' }], active: true, meta: { tag: [{ code: 'loaded' }] } });
  const kept = [1, null, {}];
  expect(stripNulls(kept)).toBe(false);
  expect(kept).toEqual([1, {}]);
});

test('struct validation and reference collection when asked', () => {
  const bad = parseLine(line('{"resourceType":"Patient","id":"a","birthDate":"1990-13-45"}'), { struct: true });
  expect(bad).toMatchObject({ ok: false, message: expect.stringContaining('Patient.birthDate') });
  const good = parseLine(line(JSON.stringify({
    resourceType: 'Observation', id: 'o', status: 'final', code: { text: 'x' },
    subject: { reference: 'Patient/p1' }, performer: [{ reference: 'Practitioner?identifier=x|1' }, { reference: 'urn:uuid:1' }],
  })), { struct: true, refs: true });
  expect(good).toMatchObject({ ok: true, refs: ['Patient/p1'] });
}, 60_000); // the first validation compiles the R4 schema: 2-4 s, more on a busy machine

test('meta follows toStored: versionId and lastUpdated dropped, an emptied or empty meta dropped, the merge object never mutated', () => {
  const json = (text: string, merge?: Record<string, Json>) => {
    const parsed = parseLine(line(text), { merge });
    return parsed.ok ? JSON.parse(parsed.json) : parsed.message;
  };
  expect(json('{"resourceType":"Patient","id":"a","meta":{"versionId":"1","lastUpdated":"2020-01-01T00:00:00Z"}}')).toEqual({});
  expect(json('{"resourceType":"Patient","id":"a","meta":{}}')).toEqual({});
  expect(json('{"resourceType":"Patient","id":"a","meta":"odd"}')).toEqual({});
  expect(json('{"resourceType":"Patient","id":"a","meta":{"versionId":"1","tag":[{"code":"t"}]}}')).toEqual({ meta: { tag: [{ code: 't' }] } });
  const merge: Record<string, Json> = { meta: { versionId: '9', source: 'load' } };
  expect(json('{"resourceType":"Patient","id":"a"}', merge)).toEqual({ meta: { source: 'load' } });
  expect(json('{"resourceType":"Patient","id":"b"}', merge)).toEqual({ meta: { source: 'load' } });
  expect(merge).toEqual({ meta: { versionId: '9', source: 'load' } });
});

test('nesting up to 200 levels, brackets inside strings and large finite numbers are loaded', () => {
  const ok = [
    `{"resourceType":"Patient","id":"a","x":${'{"a":'.repeat(199)}1${'}'.repeat(199)}}`,
    `{"resourceType":"Patient","id":"a","text":{"div":"${'[{'.repeat(500)}"}}`,
    `{"resourceType":"Patient","id":"a","text":{"div":"\\"${'['.repeat(300)}"},"x":[${'[1],'.repeat(300)}1]}`,
    '{"resourceType":"Patient","id":"a","x":1.7e308,"y":1e-999,"text":{"div":"null e999"}}',
  ];
  for (const text of ok) expect(parseLine(line(text), {}).ok).toBe(true);
});
