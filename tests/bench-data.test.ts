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

test('reads .ndjson.gz, .jsonl and Bundles (.json.gz), deduplicated by type and id; skips other files', () => {
  const folder = path.join(dir, 'good');
  fs.mkdirSync(path.join(folder, 'nested'), { recursive: true });
  fs.writeFileSync(path.join(folder, 'Observation.000.ndjson.gz'), zlib.gzipSync(`${line('Observation', 'o1')}\r\n${line('Observation', 'o2')}\n\n`));
  fs.writeFileSync(path.join(folder, 'nested/Patient.jsonl'), `${line('Patient', 'p1')}\n${line('Observation', 'o1')}\n`);
  const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: JSON.parse(line('Encounter', 'e1')) }, {}] };
  fs.writeFileSync(path.join(folder, 'bundle.json.gz'), zlib.gzipSync(JSON.stringify(bundle)));
  fs.writeFileSync(path.join(folder, 'notes.txt'), 'not FHIR');
  const { resources, files } = readResources([folder]);
  expect(files).toBe(3);
  expect(resources.map((r) => `${r.resourceType}/${r.id}`).sort()).toEqual(['Encounter/e1', 'Observation/o1', 'Observation/o2', 'Patient/p1']);

  const mix = dataSet('mix', 10, [folder]);
  expect(mix.title).toStartWith('the mix (4 distinct resources from 3 files under ');
  expect(mix.rows).toBe(10);
  expect(mix.types.reduce((n, t) => n + t.rows, 0)).toBe(10);
  const ids = mix.types.flatMap((t) => t.ndjson.toString().trim().split('\n').map((l) => JSON.parse(l).id as string));
  expect(new Set(ids).size).toBe(10);
});

test('a line that is not JSON is named by file and line', () => {
  const folder = path.join(dir, 'bad');
  fs.mkdirSync(folder);
  fs.writeFileSync(path.join(folder, 'Patient.ndjson.gz'), zlib.gzipSync(`${line('Patient', 'a')}\n\n{"resourceType":"Patient","id":"b",\n`));
  expect(() => readResources([folder])).toThrow(`${path.join(folder, 'Patient.ndjson.gz')}:3: not JSON`);
});

test('a folder with no FHIR resources, or none at all, is a clear error', () => {
  const empty = path.join(dir, 'empty');
  fs.mkdirSync(empty);
  fs.writeFileSync(path.join(empty, 'x.ndjson'), `${JSON.stringify({ id: 'no-type' })}\n`);
  expect(() => readResources([empty])).toThrow(`no FHIR resources found in ${empty}`);
  expect(() => readResources([path.join(dir, 'missing')])).toThrow('does not exist');
});
