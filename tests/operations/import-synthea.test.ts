/**
 * Real data: the 13 Synthea files of two patients of the 10-patient sample
 * (tests/fixtures/synthea/two-patients), gzipped by the test, served over HTTP, imported as ONE
 * session with 13 inputs. Every table ends with as many resources as its file has lines.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { startImport, startSourceServer, waitFor, type SourceServer } from '../helpers/import-sources.ts';

const DIR = path.join(import.meta.dir, '../fixtures/synthea/two-patients');

let server: TestServer;
let sources: SourceServer;
const files: { type: string; lines: number }[] = [];

beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_IMPORT_BATCH_LINES: '500', FHIRHOSE_IMPORT_CONCURRENCY: '4' });
  sources = startSourceServer();
  for (const name of fs.readdirSync(DIR).filter((f) => f.endsWith('.ndjson')).sort()) {
    const text = fs.readFileSync(path.join(DIR, name));
    const type = name.split('.')[0]!;
    files.push({ type, lines: text.toString('utf8').split('\n').filter((l) => l.trim() !== '').length });
    sources.set(`/${type}.ndjson.gz`, Bun.gzipSync(text));
  }
});
afterAll(async () => {
  await server?.stop();
  await sources?.stop();
});

test('13 gzipped Synthea files as one session of 13 inputs: per-type counts equal the line counts', async () => {
  expect(files.length).toBe(13);
  const res = await startImport(server, {
    id: 'synthea',
    contentEncoding: 'gzip',
    inputs: files.map((f) => ({ resourceType: f.type, url: sources.url(`/${f.type}.ndjson.gz`) })),
  });
  expect(res.status).toBe(201);
  const done = await waitFor(server, 'synthea', (s) => s.status !== 'active', 60_000);
  expect(done.status).toBe('done');
  expect(done.errorCount).toBe(0);
  expect(done.progress).toBe(1);
  for (const [i, file] of files.entries()) {
    const [row] = await server.sql.unsafe(`select count(*)::int as n from "${file.type.toLowerCase()}"`);
    expect({ type: file.type, count: row!.n }).toEqual({ type: file.type, count: file.lines });
    expect(done.inputs[i]).toMatchObject({ type: file.type, status: 'done', imported: file.lines, linesRead: file.lines });
  }
  expect(done.imported).toBe(files.reduce((a, f) => a + f.lines, 0));
}, 90_000);
