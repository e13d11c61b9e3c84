/**
 * Migrate from another FHIR server (SPEC §13), fhirhose to fhirhose: A holds the Synthea fixtures
 * (every type of them); B pulls all of it from A's `$export` with ONE request and ends with the
 * same resources (per type: count and a checksum over id and resource without meta). Then A
 * changes, creates and deletes resources, and B's `_since: latest` pull makes them equal again.
 * B may fetch from A only (FHIRHOSE_SOURCE_ALLOW).
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { basic, ROOT_SECRET, startTestServer, type TestServer } from '../helpers/server.ts';
import { syntheaBundles, uniqueResources } from '../helpers/synthea-bundles.ts';
import { within } from '../helpers/wait.ts';

const DIR = path.join(import.meta.dir, '../fixtures/synthea/two-patients');

let a: TestServer;
let b: TestServer;
let types: string[] = [];

beforeAll(async () => {
  a = await startTestServer({ FHIRHOSE_EXPORT_FILE_RESOURCES: '500' });
  // A's credential is also configured on B, for pulls that bring none
  b = await startTestServer({
    FHIRHOSE_SOURCE_ALLOW: `${a.url}/`, FHIRHOSE_IMPORT_BATCH_LINES: '200',
    FHIRHOSE_SOURCE_AUTHORIZATION: JSON.stringify({ [a.url]: basic('root', ROOT_SECRET) }),
  });
  const lines: string[] = [];
  for (const name of fs.readdirSync(DIR).filter((f) => f.endsWith('.ndjson')).sort()) {
    lines.push(...fs.readFileSync(path.join(DIR, name), 'utf8').split('\n').filter((l) => l.trim() !== ''));
  }
  for (const r of uniqueResources(syntheaBundles())) lines.push(JSON.stringify(r));
  const res = await a.request('/$load', { method: 'POST', body: lines.join('\n') + '\n', headers: { 'content-type': 'application/fhir+ndjson' } });
  const loaded = (await res.json()) as Record<string, number>;
  expect(res.status).toBe(200);
  types = Object.keys(loaded).sort();
  expect(types.length).toBeGreaterThan(12);
}, 120_000);
afterAll(async () => {
  await b?.stop();
  await a?.stop();
});

/** Per type: count and md5 over (id, resource without meta), in id order. */
async function contents(server: TestServer): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const type of types) {
    const [row] = await server.sql.unsafe(
      `select count(*)::int as n, md5(coalesce(string_agg(id || ':' || (resource - 'meta')::text, ',' order by id), '')) as sum from "${type.toLowerCase()}"`,
    );
    out[type] = `${row!.n}:${row!.sum}`;
  }
  return out;
}

/** With A's credential in the request, or (`configured`) relying on FHIRHOSE_SOURCE_AUTHORIZATION. */
function pullFromA(extra: Record<string, unknown>[] = [], configured = false) {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'exportUrl', valueUrl: `${a.url}/$export` },
      ...(configured ? [] : [{ name: 'storageDetail', part: [{ name: 'type', valueCode: 'https' }, { name: 'credentialHttpBasic', valueString: `root:${ROOT_SECRET}` }] }]),
      ...extra,
    ],
  };
}

async function pull(body: unknown): Promise<Record<string, any>> {
  const res = await b.request('/$import', { method: 'POST', json: body });
  expect(res.status).toBe(202);
  const statusPath = res.headers.get('content-location')!.slice(b.url.length);
  let done: Record<string, any> | undefined;
  await within(120_000, async () => {
    const status = await b.request(statusPath);
    if (status.status === 202) { await status.body?.cancel(); return false; }
    done = (await status.json()) as Record<string, any>;
    return true;
  }, 'the end of the pull');
  return done!;
}

const since = [{ name: '_since', valueString: 'latest' }];

test('B pulls everything from A with one request, then only the changes with _since latest (credential from config)', async () => {
  // no earlier pull from A: `latest` is a full pull
  const first = await pull(pullFromA(since));
  expect(first.extension.status).toBe('done');
  expect(first.extension.pull.since).toBeUndefined();
  expect(first.error).toEqual([]);
  const before = await contents(a);
  expect(await contents(b)).toEqual(before);
  const total = Object.values(before).reduce((n, v) => n + Number(v.split(':')[0]), 0);
  expect(first.extension.imported).toBe(total);
  expect(first.transactionTime).toBe(first.extension.pull.transactionTime);

  // A changes: an update, a new resource, two deletes (one of a type nothing else changed in)
  const patient = (await a.sql`select id, resource from patient order by id limit 1`)[0]!;
  const changed = { ...(patient.resource as Record<string, unknown>), resourceType: 'Patient', id: patient.id, gender: 'other' };
  expect((await a.request(`/Patient/${patient.id}`, { method: 'PUT', json: changed })).status).toBe(200);
  expect((await a.request('/Organization/new-org', { method: 'PUT', json: { resourceType: 'Organization', id: 'new-org', name: 'New' } })).status).toBe(201);
  const encounter = (await a.sql`select id from encounter order by id limit 1`)[0]!.id as string;
  const device = (await a.sql`select id from device order by id limit 1`)[0]!.id as string;
  expect((await a.request(`/Encounter/${encounter}`, { method: 'DELETE' })).status).toBe(204);
  expect((await a.request(`/Device/${device}`, { method: 'DELETE' })).status).toBe(204);
  expect(await contents(b)).not.toEqual(await contents(a));

  const second = await pull(pullFromA(since, true));
  expect(second.extension.status).toBe('done');
  expect(second.extension.pull.since).toBe(first.extension.pull.transactionTime);
  expect(second.output.map((o: { type: string; count: number }) => `${o.type}:${o.count}`).sort()).toEqual(['Organization:1', 'Patient:1']);
  expect(second.deleted.reduce((n: number, d: { count: number }) => n + d.count, 0)).toBe(2);
  expect(await contents(b)).toEqual(await contents(a));
  expect((await b.sql`select count(*)::int as n from encounter where id = ${encounter}`)[0]!.n).toBe(0);
  expect((await b.sql`select count(*)::int as n from device where id = ${device}`)[0]!.n).toBe(0);
  // A's exports were deleted by B once read
  await within(10_000, async () => (await a.sql`select count(*)::int as n from export_job`)[0]!.n === 0, 'the DELETE of A\'s exports');
}, 240_000);

test('an exportUrl outside FHIRHOSE_SOURCE_ALLOW is a 403 and no session', async () => {
  const before = (await b.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n;
  const res = await b.request('/$import', { method: 'POST', json: { resourceType: 'Parameters', parameter: [{ name: 'exportUrl', valueUrl: 'http://127.0.0.2:9/$export' }] } });
  const body = (await res.json()) as Record<string, any>;
  expect(res.status).toBe(403);
  expect(body.issue[0].diagnostics).toContain('FHIRHOSE_SOURCE_ALLOW');
  expect((await b.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n).toBe(before);
});
