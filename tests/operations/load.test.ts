import { afterAll, beforeAll, beforeEach, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { ndjson, serveSources, type SourceServer } from '../helpers/sources.ts';
import { within } from '../helpers/wait.ts';

let server: TestServer;
let sources: SourceServer;
beforeAll(async () => { server = await startTestServer(); sources = serveSources(); });
afterAll(async () => { sources.stop(); await server.stop(); });
beforeEach(async () => { await server.sql`truncate patient, patient_history, observation, observation_history, organization`; });

const patients = (n: number, extra: Record<string, unknown> = {}) =>
  Array.from({ length: n }, (_, i) => ({ resourceType: 'Patient', id: `p${i + 1}`, name: [{ family: `F${i + 1}` }], ...extra }));

async function load(body: unknown, pathname = '/$load') {
  const res = await server.request(pathname, { method: 'POST', json: body });
  return { status: res.status, body: await res.json() as Record<string, any> };
}

test('POST /$load loads a gzipped ndjson source served over HTTP and answers counts per type', async () => {
  const lines = [...patients(3), { resourceType: 'Organization', id: 'o1', name: 'Org' }, { resourceType: 'Observation', id: 'obs1', status: 'final', code: { text: 'x' } }];
  const url = sources.put('/mixed.ndjson.gz', ndjson(lines), { gzip: true });
  const { status, body } = await load({ source: url });
  expect(status).toBe(200);
  expect(body).toEqual({ Patient: 3, Organization: 1, Observation: 1 });
  const res = await server.request('/Patient/p2');
  expect(await res.json()).toMatchObject({ resourceType: 'Patient', id: 'p2', meta: { versionId: expect.any(String) }, name: [{ family: 'F2' }] });
  const [row] = await server.sql`select resource, status from patient where id = 'p2'`;
  expect(row).toEqual({ resource: { name: [{ family: 'F2' }] }, status: 'created' });
});

test('plain ndjson with CRLF, blank lines and no final newline loads too (gzip is detected from bytes, not the name)', async () => {
  const text = patients(3).map((p) => JSON.stringify(p)).join('\r\n\r\n');
  const url = sources.put('/looks-gzipped.ndjson.gz', text);
  expect((await load({ source: url })).body).toEqual({ Patient: 3 });
});

test('POST /<Type>/$load answers total, accepts lines without resourceType and refuses another type', async () => {
  const url = sources.put('/typed.ndjson', ndjson([{ id: 'a' }, { resourceType: 'Patient', id: 'b' }, { resourceType: 'Observation', id: 'c' }]));
  const { status, body } = await load({ source: url }, '/Patient/$load');
  expect(status).toBe(200);
  expect(body).toEqual({
    total: 2, errorCount: 1,
    errors: [{ line: 3, message: 'resourceType "Observation" does not match the URL\'s type "Patient"' }],
  });
  expect((await load({ source: url }, '/fhir/Patient/$load')).body.total).toBe(2);
  expect((await load({ source: url }, '/Nonsense/$load')).status).toBe(404);
  expect((await load({ source: url }, '/Client/$load')).status).toBe(400);
});

test('a YAML body works, as in the Aidbox examples, and the answer can be YAML', async () => {
  const url = sources.put('/yaml.ndjson', ndjson(patients(2)));
  const res = await server.request('/$load', {
    method: 'POST',
    headers: { 'content-type': 'text/yaml', accept: 'text/yaml' },
    body: `source: ${url}\nvalidation:\n  enable: off\n  checks: struct\nmethod: copy\nupdate: false\nmerge: {}\nstrip-nulls: false\n`,
  });
  expect(res.status).toBe(200);
  expect(await res.text()).toBe('Patient: 2\n');
});

test('file:// sources under FHIRHOSE_IMPORT_ROOT load; the same resources twice count as updates, not new rows', async () => {
  fs.mkdirSync(path.join(server.importRoot, 'sub'), { recursive: true });
  const file = path.join(server.importRoot, 'sub', 'patients.ndjson');
  fs.writeFileSync(file, ndjson(patients(4)));
  expect((await load({ source: `file://${file}` })).body).toEqual({ Patient: 4 });
  expect((await load({ source: `file://${file}` })).body).toEqual({ Patient: 4 });
  const rows = await server.sql`select status, count(*)::int as n from patient group by status`;
  expect([...rows]).toEqual([{ status: 'updated', n: 4 }]);
});

test('duplicated ids: the last line wins and the answer counts the duplicates', async () => {
  const url = sources.put('/dups.ndjson', ndjson([
    { resourceType: 'Patient', id: 'x', gender: 'male' }, { resourceType: 'Patient', id: 'y' },
    { resourceType: 'Patient', id: 'x', gender: 'female' }, { resourceType: 'Patient', id: 'x', gender: 'other' },
  ]));
  expect((await load({ source: url })).body).toEqual({ Patient: 2, duplicates: 2 });
  expect((await (await server.request('/Patient/x')).json()).gender).toBe('other');
});

test('method copy and method insert give the same final state, duplicates included', async () => {
  const lines = [...patients(120), ...patients(30, { gender: 'female' }), { resourceType: 'Organization', id: 'o', name: 'n' }];
  const url = sources.put('/same.ndjson', ndjson(lines));
  const state = async () => (await server.sql`select id, status, resource from patient order by id`).map((r) => [r.id, r.status, JSON.stringify(r.resource)]);
  const copy = await load({ source: url, method: 'copy' });
  const afterCopy = await state();
  await server.sql`truncate patient, organization`;
  const insert = await load({ source: url, method: 'insert' });
  expect(insert.body).toEqual(copy.body);
  expect(copy.body).toEqual({ Patient: 120, Organization: 1, duplicates: 30 });
  expect(await state()).toEqual(afterCopy);
});

test('update: true writes the overwritten versions to history; update: false does not', async () => {
  const v1 = sources.put('/v1.ndjson', ndjson(patients(3)));
  const v2 = sources.put('/v2.ndjson', ndjson(patients(3, { gender: 'male' })));
  const v3 = sources.put('/v3.ndjson', ndjson(patients(3, { gender: 'female' })));
  await load({ source: v1 });
  await load({ source: v2, update: false });
  expect((await server.sql`select count(*)::int as n from patient_history`)[0]!.n).toBe(0);
  for (const method of ['copy', 'insert']) {
    await load({ source: v3, update: true, method });
  }
  const history = await server.sql`select id, resource->>'gender' as gender from patient_history order by id, txid`;
  expect(history.map((r) => `${r.id}:${r.gender}`)).toEqual(['p1:male', 'p1:female', 'p2:male', 'p2:female', 'p3:male', 'p3:female']);
  const versions = await (await server.request('/Patient/p1/_history')).json() as { entry: unknown[] };
  expect(versions.entry.length).toBe(3);
});

test('merge is shallow-merged into every resource and strip-nulls drops nulls', async () => {
  const url = sources.put('/merge.ndjson', ndjson([{ resourceType: 'Patient', id: 'm', gender: null, name: [{ family: 'F', given: [null] }], active: false }]));
  await load({ source: url, merge: { active: true, meta: { tag: [{ system: 'urn:load', code: 'batch-7' }] } }, 'strip-nulls': true });
  const [row] = await server.sql`select resource from patient where id = 'm'`;
  expect(row!.resource).toEqual({ meta: { tag: [{ system: 'urn:load', code: 'batch-7' }] }, name: [{ family: 'F' }], active: true });
  await load({ source: url });
  const [kept] = await server.sql`select resource from patient where id = 'm'`;
  expect(kept!.resource).toEqual({ gender: null, name: [{ family: 'F', given: [null] }], active: false });
});

test('temp_table keeps the named staging table for inspection and the next load replaces it', async () => {
  const url = sources.put('/stage.ndjson', ndjson(patients(5)));
  await load({ source: url, temp_table: '_patient_stage' });
  const staged = await server.sql`select line, type, id from _patient_stage order by line`;
  expect(staged.map((r) => `${r.line}:${r.type}/${r.id}`)).toEqual(['1:Patient/p1', '2:Patient/p2', '3:Patient/p3', '4:Patient/p4', '5:Patient/p5']);
  await load({ source: sources.put('/stage2.ndjson', ndjson(patients(2))), temp_table: '_patient_stage' });
  expect((await server.sql`select count(*)::int as n from _patient_stage`)[0]!.n).toBe(2);
  const refused = await load({ source: url, temp_table: 'patient' });
  expect(refused.status).toBe(409);
  expect((await server.sql`select count(*)::int as n from patient`)[0]!.n).toBe(5);
});

test('two loads at once into the same temp_table: one loads, the other is 409, nothing is mixed', { timeout: 90_000 }, async () => {
  // the first load's source sends five lines, then holds until the second load is waiting
  let release!: () => void;
  const released = new Promise<void>((resolve) => { release = resolve; });
  let chunks = 0;
  const held = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: () => new Response(new ReadableStream<Uint8Array>({
      async pull(controller) {
        const part = chunks++;
        if (part === 1) await released;
        if (part > 1) return controller.close();
        const ids = [1, 2, 3, 4, 5].map((n) => n + part * 5);
        controller.enqueue(new TextEncoder().encode(ndjson(ids.map((n) => ({ resourceType: 'Patient', id: `slow${n}` })))));
      },
    })),
  });
  try {
    const first = load({ source: `http://127.0.0.1:${held.port}/slow.ndjson`, temp_table: '_shared_stage' });
    await within(30_000, async () => (await activity('copy "_shared_stage"%')).length > 0, "the first load's COPY into _shared_stage");
    const second = load({ source: sources.put('/quick.ndjson', ndjson(patients(2))), temp_table: '_shared_stage' });
    // the second waits for the first's uncommitted table (the catalog's unique index)
    await within(30_000, async () => (await activity('create unlogged table "_shared_stage"%')).some((a) => a.wait_event_type === 'Lock'),
      'the second load waiting for the first');
    release();
    expect((await first).body).toEqual({ Patient: 10 });
    const refused = await second;
    expect(refused.status).toBe(409);
    expect(refused.body.message).toContain('_shared_stage');
    expect((await server.sql`select count(*)::int as n from _shared_stage`)[0]!.n).toBe(10);
  } finally {
    release();
    held.stop(true);
  }
});

/** Statements of other backends of the test database like `like`, with what they wait for. */
function activity(like: string): Promise<{ wait_event_type: string | null }[]> {
  return server.sql<{ wait_event_type: string | null }[]>`select wait_event_type from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid() and query ilike ${like} and state = 'active'`;
}

test('malformed requests are 400 naming the field', async () => {
  const url = sources.put('/ok.ndjson', ndjson(patients(1)));
  const cases: [unknown, string][] = [
    [{}, 'source'],
    [{ source: url, temp_table: 'x; drop table patient' }, 'temp_table'],
    [{ source: url, temp_table: '1abc' }, 'temp_table'],
    [{ source: url, validation: { enable: 'maybe' } }, 'validation.enable'],
    [{ source: url, validation: { checks: 'semantic' } }, 'validation.checks'],
    [{ source: url, method: 'upsert' }, 'method'],
    [{ source: url, update: 'yes' }, 'update'],
    [{ source: url, merge: { id: 'x' } }, 'merge'],
    [{ source: url, merge: [1] }, 'merge'],
    [{ source: url, strip_nulls: true }, 'strip_nulls'],
    [[url], 'body must be an object'],
  ];
  for (const [body, field] of cases) {
    const { status, body: answer } = await load(body);
    expect({ body, status }).toEqual({ body, status: 400 });
    expect(answer.message).toContain(field);
    expect(answer.resourceType).toBe('OperationOutcome');
  }
  expect((await server.sql`select count(*)::int as n from patient`)[0]!.n).toBe(0);
});
