/**
 * Real data: two patients of the Synthea 10-patient bulk export (tests/fixtures/synthea/two-patients,
 * all 13 types, every reference resolving), gzipped here and served over local HTTP.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { serveSources, type SourceServer } from '../helpers/sources.ts';

const DATA = path.join(import.meta.dir, '../fixtures/synthea/two-patients');
const files = fs.readdirSync(DATA).filter((f) => f.endsWith('.ndjson')).sort();

let server: TestServer;
let sources: SourceServer;
beforeAll(async () => {
  server = await startTestServer();
  sources = serveSources();
});
afterAll(async () => {
  sources.stop();
  await server.stop();
});

function idsOf(file: string): string[] {
  return fs.readFileSync(path.join(DATA, file), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).id as string);
}

/** The ids of a type as the API gives them back: `$dump` when it exists, else the paged search. */
async function idsFromApi(type: string): Promise<string[]> {
  const dump = await server.request(`/${type}/$dump`);
  if (dump.status === 200) {
    return (await dump.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l).id as string);
  }
  await dump.body?.cancel();
  const ids: string[] = [];
  let next: string | undefined = `/${type}?_count=500`;
  while (next) {
    const page = await (await server.request(next)).json() as { entry?: { resource: { id: string } }[]; link?: { relation: string; url: string }[] };
    for (const e of page.entry ?? []) ids.push(e.resource.id);
    const url = page.link?.find((l) => l.relation === 'next')?.url;
    next = url ? new URL(url, server.url).pathname + new URL(url, server.url).search : undefined;
  }
  return ids;
}

test('the 13 Synthea files load with struct validation, count = lines per type, and the API gives back the same ids', async () => {
  for (const file of files) {
    const type = file.split('.')[0]!;
    const url = sources.put(`/${file}.gz`, fs.readFileSync(path.join(DATA, file)), { gzip: true });
    const res = await server.request(`/${type}/$load`, { method: 'POST', json: { source: url, validation: { enable: 'on', checks: 'struct' } } });
    const body = await res.json();
    const ids = idsOf(file);
    expect({ file, body }).toEqual({ file, body: { total: ids.length } });
    expect((await idsFromApi(type)).sort()).toEqual([...ids].sort());
  }
}, 120_000);

test('all 13 files in one mixed source through POST /$load: counts per type, references all resolve', async () => {
  const text = files.map((f) => fs.readFileSync(path.join(DATA, f), 'utf8')).join('');
  const url = sources.put('/all.ndjson.gz', text, { gzip: true });
  const res = await server.request('/$load', { method: 'POST', json: { source: url, validation: { enable: 'on', checks: 'refs' }, update: true } });
  const body = await res.json();
  const expected = Object.fromEntries(files.map((f) => [f.split('.')[0]!, idsOf(f).length]));
  expect(body).toEqual(expected);
  const [history] = await server.sql`select count(*)::int as n from encounter_history`;
  expect(history!.n).toBe(expected.Encounter!);
}, 120_000);
