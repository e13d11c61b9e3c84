/**
 * The data sets of `npm run bench` read data that is not the project's (`--data-dir`): bulk files
 * gzipped as `$export` and other servers write them, `.jsonl`, Bundles; a line that is not JSON is
 * named by file and line.
 */
import { afterAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { dataSet, readResources } from '../scripts/bench/data.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-data-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const line = (type: string, id: string, extra: Record<string, unknown> = {}) => JSON.stringify({ resourceType: type, id, ...extra });

test('reads .ndjson.gz, .jsonl, Bundles (.json.gz), arrays of resources and single ones (.json), deduplicated by type and id; skips other files', async () => {
  const folder = path.join(dir, 'good');
  fs.mkdirSync(path.join(folder, 'nested'), { recursive: true });
  // two gzip members, as a file written in parts is
  fs.writeFileSync(path.join(folder, 'Observation.000.ndjson.gz'), Buffer.concat([zlib.gzipSync(`${line('Observation', 'o1')}\r\n`), zlib.gzipSync(`${line('Observation', 'o2')}\n\n`)]));
  fs.writeFileSync(path.join(folder, 'nested/Patient.jsonl'), `${line('Patient', 'p1')}\n${line('Observation', 'o1')}\n`);
  const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: JSON.parse(line('Encounter', 'e1')) }, {}] };
  fs.writeFileSync(path.join(folder, 'bundle.json.gz'), zlib.gzipSync(JSON.stringify(bundle)));
  fs.writeFileSync(path.join(folder, 'notes.txt'), 'not FHIR');
  fs.writeFileSync(path.join(folder, 'nested/conditions.json'), JSON.stringify([JSON.parse(line('Condition', 'c1')), null, 7]));
  fs.writeFileSync(path.join(folder, 'nested/one.json'), line('Procedure', 'pr1'));
  const { resources, files } = await readResources([folder]);
  expect(files).toBe(5);
  expect(resources.map((r) => `${r.resourceType}/${r.id}`).sort()).toEqual(['Condition/c1', 'Encounter/e1', 'Observation/o1', 'Observation/o2', 'Patient/p1', 'Procedure/pr1']);

  const mix = await dataSet('mix', 10, [folder]);
  expect(mix.title).toStartWith('the mix (6 distinct resources from 5 files under ');
  expect(mix.rows).toBe(10);
  expect(mix.types.reduce((n, t) => n + t.rows, 0)).toBe(10);
  const ids = mix.types.flatMap((t) => t.ndjson.toString().trim().split('\n').map((l) => JSON.parse(l).id as string));
  expect(new Set(ids).size).toBe(10);
});

test('a line that is not JSON is named by file and line', async () => {
  const folder = path.join(dir, 'bad');
  fs.mkdirSync(folder);
  fs.writeFileSync(path.join(folder, 'Patient.ndjson.gz'), zlib.gzipSync(`${line('Patient', 'a')}\n\n{"resourceType":"Patient","id":"b",\n`));
  await expect(readResources([folder])).rejects.toThrow(`${path.join(folder, 'Patient.ndjson.gz')}:3: not JSON`);
});

test('a folder with no FHIR resources, or none at all, is a clear error', async () => {
  const empty = path.join(dir, 'empty');
  fs.mkdirSync(empty);
  fs.writeFileSync(path.join(empty, 'x.ndjson'), `${JSON.stringify({ id: 'no-type' })}\n`);
  await expect(readResources([empty])).rejects.toThrow(`no FHIR resources found in ${empty}`);
  await expect(readResources([path.join(dir, 'missing')])).rejects.toThrow('does not exist');
});

test('data bigger than the bench size is sampled evenly: every type keeps its share, and no id is made up', async () => {
  const folder = path.join(dir, 'big');
  fs.mkdirSync(folder);
  // files sorted by name: a first-come sample would be all AllergyIntolerance
  const lines = (type: string, n: number) => Array.from({ length: n }, (_, i) => line(type, `${type[0]}${i}`, { n: i })).join('\n');
  fs.writeFileSync(path.join(folder, 'AllergyIntolerance.ndjson'), `${lines('AllergyIntolerance', 1000)}\n\n`);
  fs.writeFileSync(path.join(folder, 'Condition.ndjson.gz'), zlib.gzipSync(lines('Condition', 1000)));
  fs.writeFileSync(path.join(folder, 'Observation.ndjson'), `${lines('Observation', 2000)}\n`);
  const mix = await dataSet('mix', 400, [folder]);
  expect(mix.title).toStartWith('the mix (an even sample of 400 of the 4,000 resources in 3 files under ');
  expect(Object.fromEntries(mix.types.map((t) => [t.type, t.rows]))).toEqual({ AllergyIntolerance: 100, Condition: 100, Observation: 200 });
  const ids = mix.types.flatMap((t) => t.ndjson.toString().trim().split('\n').map((l) => JSON.parse(l).id as string));
  expect(new Set(ids).size).toBe(400);
  expect(ids.every((id) => /^[ACO]\d+$/.test(id))).toBe(true);
  // spread over each file, not its first lines
  const observations = mix.types.find((t) => t.type === 'Observation')!.ndjson.toString().trim().split('\n').map((l) => JSON.parse(l).n as number);
  expect(Math.min(...observations)).toBeLessThan(20);
  expect(Math.max(...observations)).toBeGreaterThan(1980);

  const small = await dataSet('small', 5000, [folder]);
  expect(small.rows).toBe(5000);
  expect(small.title).toStartWith('small resources: the 4,000 under 1 KB of the mix (4,000 distinct resources from 3 files under ');
});

test('a line longer than the reads it spans is read whole, plain and gzipped', async () => {
  const folder = path.join(dir, 'long');
  fs.mkdirSync(folder);
  const text = 'é'.repeat(1_500_000) + 'x';
  fs.writeFileSync(path.join(folder, 'a.ndjson'), `${line('Patient', 'short')}\n${line('Patient', 'long', { text })}\n${line('Patient', 'after')}`);
  fs.writeFileSync(path.join(folder, 'b.ndjson.gz'), zlib.gzipSync(`${line('Observation', 'long', { text })}\r\n`));
  const { resources } = await readResources([folder]);
  expect(resources.map((r) => `${r.resourceType}/${r.id}`)).toEqual(['Patient/short', 'Patient/long', 'Patient/after', 'Observation/long']);
  expect(resources.filter((r) => r.id === 'long').map((r) => r.text)).toEqual([text, text]);
});

test('a sample far smaller than the data is spread over all the files, a few resources apart', async () => {
  const folder = path.join(dir, 'bundles');
  fs.mkdirSync(folder);
  for (let f = 0; f < 10; f++) {
    const entry = Array.from({ length: 10 }, (_, i) => ({ resource: JSON.parse(line('Patient', `p${f}-${i}`)) }));
    fs.writeFileSync(path.join(folder, `patient-${f}.json`), JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }));
  }
  const mix = await dataSet('mix', 4, [folder]);
  expect(mix.title).toStartWith('the mix (an even sample of 4 of the 100 resources in 10 files under ');
  expect(mix.types[0]!.ndjson.toString().trim().split('\n').map((l) => JSON.parse(l).id)).toEqual(['p2-4', 'p4-9', 'p7-4', 'p9-9']);
});

test('what $load refuses is left out of the data and said so: both sides load the same lines, and no raw COPY fails', async () => {
  const folder = path.join(dir, 'refused');
  fs.mkdirSync(folder);
  const good = Array.from({ length: 20 }, (_, i) => line('Patient', `p${i}`));
  const odd = ['{"resourceType":"Patient","id":"nul","name":[{"family":"a\\u0000b"}]}', '{"resourceType":"Patient","id":"sur","name":[{"family":"a\\ud800b"}]}',
    '{"resourceType":"Patient","id":"big","x":1e400}', line('Patient', 'bad id!'), line('Patient', 'x'.repeat(65)),
    line('Patient', 'long', { text: 'x'.repeat(16 * 1024 * 1024) })];
  fs.writeFileSync(path.join(folder, 'Patient.ndjson'), [...good.slice(0, 10), ...odd, ...good.slice(10)].join('\n'));
  const mix = await dataSet('mix', 40, [folder]);
  expect(mix.title).toEndWith('; 6 left out, as `$load` refuses them (e.g. Patient/nul: contains \\u0000 or an unpaired surrogate escape, which PostgreSQL jsonb cannot store))');
  const ids = mix.types[0]!.ndjson.toString().trim().split('\n').map((l) => JSON.parse(l).id as string);
  expect(ids.length).toBe(40);
  expect(ids.every((id) => /^p\d+(-1)?$/.test(id))).toBe(true);
  await expect(dataSet('mix', 40, [path.join(folder, 'Patient.ndjson'), path.join(dir, 'missing.ndjson')])).rejects.toThrow('does not exist');
});
