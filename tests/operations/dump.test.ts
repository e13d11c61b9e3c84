/** GET /<Type>/$dump (SPEC §5): what the lines hold, parameters, errors. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { gunzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { fromRow, type ResourceRow } from '../../src/fhir/resource.ts';
import { LAST_UPDATED } from '../../src/storage/resources.ts';
import { copyPatients, dechunk, rawGet, syntheaPatients } from './dump-helpers.ts';

let server: TestServer;
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server.stop(); });

async function rowCount(table: string): Promise<number> {
  const [row] = await server.sql.unsafe(`select count(*)::int as count from ${table}`);
  return Number(row!.count);
}

const identity = { headers: { 'accept-encoding': 'identity' } };

async function dumpLines(pathname: string): Promise<Record<string, unknown>[]> {
  const res = await server.request(pathname, identity);
  expect(res.status).toBe(200);
  const text = await res.text();
  expect(text.endsWith('\n') || text === '').toBe(true);
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/**
 * The resource as the REST read path builds it from the same row (fromRow), to compare with; a
 * `resource` that is not a JSON object counts as {} ($dump's decision: a line must be a resource).
 */
async function expected(type: string, id: string): Promise<Record<string, unknown>> {
  const [row] = await server.sql.unsafe(`select id, txid, ${LAST_UPDATED} as last_updated, resource_type,
    case when jsonb_typeof(resource) = 'object' then resource else '{}' end as resource from "${type.toLowerCase()}" where id = $1`, [id]);
  const resource = fromRow(row as unknown as ResourceRow) as Record<string, unknown> & { meta: Record<string, unknown> };
  if (resource.meta.lastUpdated === null) delete resource.meta.lastUpdated;
  return resource;
}

describe('GET /<Type>/$dump content', () => {
  // Every shape the line splicer distinguishes, and the ones it must send to the slow path.
  const handRows: [string, string][] = [
    ['demo', '{"name": [{"family": "John"}]}'],
    ['empty', '{}'],
    ['empty-meta', '{"meta": {}}'],
    ['meta-only', '{"meta": {"source": "#x", "tag": [{"code": "t"}]}}'],
    ['own-columns', '{"id": "other", "resourceType": "Observation", "meta": {"versionId": "9", "lastUpdated": "1990-01-01T00:00:00Z", "tag": [{"code": "kept"}]}, "active": true}'],
    ['short-key', '{"a": 1, "meta": {"security": []}}'],
    ['three-key', '{"abc": 1, "meta": {"source": "s"}, "zz": 2}'],
    ['nested-meta', '{"extension": [{"url": "http://x", "meta": "not the top level"}]}'],
    ['contained', '{"meta": {"source": "c"}, "contained": [{"resourceType": "Organization", "id": "o1", "meta": {"versionId": "3"}}]}'],
    ['meta-string', '{"meta": "odd", "gender": "male"}'],
    ['escapes', JSON.stringify({ text: { div: '<div>"quoted" \\ back\nnew\ttab é 日本 \u0001</div>' }, gender: 'other' })],
    ['not-an-object', '[1, 2, 3]'],
    ['meta-stamps', '{"meta": {"lastUpdated": "2001-01-01T00:00:00Z"}}'],
    // a shorter key sorts before "meta" (an Observation's "code"): the splicer finds the top-level meta
    ['code-meta', JSON.stringify({ code: { coding: [{ code: 'x', display: 'a "q", } ] { meta' }] }, meta: { profile: ['p'] }, status: 'final' })],
    ['code-meta-last', '{"code": "c", "meta": {"source": "s"}}'],
    ['code-meta-empty', '{"code": [1, {"a": [2, "]"]}], "meta": {}, "text": {"div": "meta"}}'],
    ['code-meta-stamps', '{"code": 1, "meta": {"versionId": "7", "tag": []}}'],
    ['date-nested-meta', '{"date": "2020", "name": [{"meta": "nested"}], "status": "x"}'],
    ['code-meta-number', '{"code": true, "meta": 5, "value": null}'],
    // "resourceType" nested in contained resources (every Synthea ExplanationOfBenefit): kept as is
    ['contained-types', '{"use": "claim", "contained": [{"resourceType": "Coverage", "id": "c1", "meta": {"versionId": "2"}}], "supportingInfo": [{"sequence": 1}]}'],
    ['contained-then-own-type', '{"use": "x", "contained": [{"resourceType": "Coverage"}], "resourceType": "Observation", "supportingInfo": [1]}'],
    ['quoted-type', JSON.stringify({ note: [{ text: '"resourceType": "X"' }], status: 's' })],
    // meta holding its own versionId/lastUpdated (rows copied by SQL from another server): the
    // columns win, the other members stay, and the row stays on the splicer's fast path
    ['hapi-meta', JSON.stringify({ meta: { versionId: '3', lastUpdated: '2020-01-01T00:00:00Z', source: '#s', profile: ['p'], tag: [{ code: 't' }], extension: [{ url: 'u' }] }, gender: 'male' })],
    ['stamps-only', '{"meta": {"versionId": "1", "lastUpdated": "2020"}, "active": true}'],
    ['stamps-odd-values', JSON.stringify({ meta: { versionId: 5, lastUpdated: { a: '}, "x": [' }, security: [{ code: '"versionId": ' }] }, name: [] })],
    ['code-meta-stamp-last', '{"code": 1, "meta": {"source": "s", "lastUpdated": "2001"}}'],
    ['code-meta-stamps-between', '{"code": [{"meta": {"versionId": "n"}}], "meta": {"tag": [], "versionId": "2", "extension": []}, "status": "s"}'],
    ['stamps-in-text-only', JSON.stringify({ meta: { source: 's' }, text: { div: '"versionId": "lastUpdated": ' } })],
    // a whole resource inserted by SQL: its own id, resourceType and meta stamps give way to the columns
    ['full-resource', JSON.stringify({ resourceType: 'Observation', id: 'inner-id', meta: { versionId: '4', lastUpdated: '2020-01-01T00:00:00Z', source: '#x' }, gender: 'female', name: [{ family: 'Ünal', given: ['"Q"'] }], contained: [{ resourceType: 'Organization', id: 'o' }] })],
    ['id-and-meta-string', '{"id": 7, "meta": "odd", "resourceType": null, "zzzzzzzzzzzzz": {"id": "nested"}}'],
    ['id-last-member', '{"a": [], "id": "x"}'],
  ];

  beforeAll(async () => {
    const put = await server.request('/', { method: 'PUT', json: syntheaPatients() });
    expect(put.status).toBe(200);
    for (const [id, resource] of handRows) {
      await server.sql.unsafe(`insert into patient (id, txid, status, resource) values ($1, nextval('transaction_id_seq'), 'created', $2::text::jsonb)`, [id, resource]);
    }
    await server.sql.unsafe(`insert into patient (id, txid, status, resource) values ('we"ird\\id', 9007199254740993, 'created', '{"gender": "x"}')`);
  });

  test('every line is the complete resource the REST read gives for the same row', async () => {
    const lines = await dumpLines('/Patient/$dump');
    const count = await rowCount('patient');
    expect(lines.length).toBe(count);
    for (const line of lines) {
      expect(line).toEqual(await expected('Patient', line.id as string));
    }
  });

  test('a stored meta with its own versionId/lastUpdated is spliced, not rebuilt: ours come first', async () => {
    const res = await server.request('/Patient/$dump', identity);
    const lines = (await res.text()).split('\n');
    for (const id of ['hapi-meta', 'stamps-only', 'stamps-odd-values', 'code-meta-stamp-last', 'code-meta-stamps-between']) {
      const line = lines.find((l) => l.includes(`"id":"${id}"`))!;
      // the rebuild (fromRow) writes the stored members first; the splice writes versionId first
      expect(line.startsWith(`{"resourceType":"Patient","id":"${id}","meta":{"versionId":"`)).toBe(true);
      expect(line.match(/"versionId"/g)?.length ?? 0).toBe(id === 'code-meta-stamps-between' ? 2 : 1); // the nested one of "code" stays
    }
  });

  test('a stored top-level id or resourceType is walked past, not rebuilt; what is not an object is rebuilt', async () => {
    const res = await server.request('/Patient/$dump', identity);
    const lines = (await res.text()).split('\n');
    const lineOf = (id: string) => lines.find((l) => l.startsWith(`{"resourceType":"Patient","id":"${id}",`))!;
    for (const id of ['own-columns', 'short-key', 'contained-then-own-type', 'full-resource', 'id-and-meta-string', 'id-last-member']) {
      // the rebuild (fromRow) writes the stored meta members before versionId
      expect({ id, spliced: lineOf(id).startsWith(`{"resourceType":"Patient","id":"${id}","meta":{"versionId":"`) }).toEqual({ id, spliced: true });
    }
    // copied as jsonb wrote it (`, ` and `": `), which JSON.stringify would not
    expect(lineOf('full-resource')).toContain(', "contained": [{"id": "o", "resourceType": "Organization"}]');
    expect(JSON.parse(lineOf('id-and-meta-string')).zzzzzzzzzzzzz).toEqual({ id: 'nested' });
    expect(lineOf('not-an-object')).toMatch(/^\{"resourceType":"Patient","id":"not-an-object","meta":\{"versionId":"\d+","lastUpdated":"[^"]+"\}\}$/);
  });

  test('API-written resources keep their stored meta next to versionId and lastUpdated', async () => {
    const lines = await dumpLines('/Patient/$dump');
    const sample = syntheaPatients()[0] as { id: string; meta: { profile: string[] } };
    const line = lines.find((l) => l.id === sample.id) as { meta: Record<string, unknown> };
    const rest = await (await server.request(`/Patient/${sample.id}`)).json();
    expect(line).toEqual(rest);
    expect(line.meta.profile).toEqual(sample.meta.profile);
    expect(line.meta.versionId).toMatch(/^\d+$/);
    expect(line.meta.lastUpdated).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
  });

  test('hand-inserted rows come out with the columns winning over their own id/meta', async () => {
    const lines = await dumpLines('/Patient/$dump');
    const own = lines.find((l) => l.id === 'own-columns') as Record<string, any>;
    expect(own.resourceType).toBe('Patient');
    expect(own.meta.versionId).not.toBe('9');
    expect(own.meta.lastUpdated).not.toBe('1990-01-01T00:00:00Z');
    expect(own.meta.tag).toEqual([{ code: 'kept' }]);
    expect(lines.find((l) => l.id === 'empty')).toEqual({ resourceType: 'Patient', id: 'empty', meta: expect.any(Object) });
    expect(lines.find((l) => l.id === 'not-an-object')).toEqual({ resourceType: 'Patient', id: 'not-an-object', meta: expect.any(Object) });
    expect((lines.find((l) => l.id === 'we"ird\\id') as any).meta.versionId).toBe('9007199254740993');
  });

  test('lastUpdated has the REST format for timestamps before 1970, before 2000, with µs, and none for infinity', async () => {
    const stamps = ['1969-07-20 20:17:40.5+00', '1999-12-31 23:59:59.999999+00', '2024-02-29 12:00:00.000001+00', '9999-12-31 23:59:59.999999+00', '0001-01-01 00:00:00+00'];
    await server.sql`insert into observation (id, txid, status, ts, resource)
      select 'ts' || i, i, 'created', s::timestamptz, '{"status": "final"}' from unnest(${stamps}::text[]) with ordinality as u(s, i)`;
    await server.sql`insert into observation (id, txid, status, ts, resource) values ('inf', 99, 'created', 'infinity', '{}')`;
    const lines = await dumpLines('/Observation/$dump');
    expect(lines.length).toBe(stamps.length + 1);
    for (const line of lines) expect(line).toEqual(await expected('Observation', line.id as string));
    expect((lines.find((l) => l.id === 'ts2') as any).meta.lastUpdated).toBe('1999-12-31T23:59:59.999999Z');
    expect((lines.find((l) => l.id === 'inf') as any).meta).toEqual({ versionId: '99' });
  });

  test('Client secrets never leave the server, not even hashed', async () => {
    await server.request('/Client/c1', { method: 'PUT', json: { resourceType: 'Client', secret: 's3cret', grant_types: ['basic'] } });
    const lines = await dumpLines('/Client/$dump');
    expect(lines.map((l) => l.id).sort()).toEqual(['c1', 'root']);
    for (const line of lines) expect(line).not.toHaveProperty('secret');
  });

  test('an empty table gives 200 and an empty body; /fhir works too', async () => {
    const res = await server.request('/fhir/Account/$dump', identity);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/ndjson');
    expect(await res.text()).toBe('');
  });

  test('a type whose table name is an SQL keyword ("group") dumps like any other', async () => {
    await server.sql`insert into "group" (id, txid, status, resource) values ('g1', 1, 'created', '{"type": "person", "actual": true}')`;
    expect(await dumpLines('/Group/$dump')).toEqual([await expected('Group', 'g1')]);
  });

  test('a large table arrives complete as a real chunked body', async () => {
    await copyPatients(server.sql, 3000, 'big-');
    const count = await rowCount('patient');
    const res = await rawGet(server.url, '/Patient/$dump');
    expect(res.status).toBe(200);
    expect(res.headers['transfer-encoding']).toBe('chunked');
    const { body, complete } = dechunk(await res.ended);
    expect(complete).toBe(true);
    const lines = body.toString('utf8').split('\n');
    expect(lines.pop()).toBe('');
    expect(lines.length).toBe(count);
    expect(new Set(lines.map((l) => JSON.parse(l).id)).size).toBe(count);
  });
});

describe('GET /<Type>/$dump parameters', () => {
  beforeAll(async () => {
    await server.sql`insert into practitioner (id, txid, status, cts, resource) values
      ('old', 1, 'created', '2020-01-01T00:00:00Z', '{}'),
      ('mid', 2, 'created', '2024-06-01T12:00:00Z', '{}'),
      ('new', 3, 'created', '2025-01-01T00:00:00Z', '{}')`;
  });
  const ids = async (query: string) => (await dumpLines(`/Practitioner/$dump${query}`)).map((l) => l.id).sort();

  test('_since keeps resources created after the instant, in every instant form', async () => {
    expect(await ids('?_since=2024-01-01T00:00:00Z')).toEqual(['mid', 'new']);
    expect(await ids('?_since=2024-06-01T12:00:00Z')).toEqual(['new']); // strictly after
    expect(await ids('?_since=2024-06-01')).toEqual(['mid', 'new']);
    expect(await ids('?_since=2024-06-01T13:00:00%2B02:00')).toEqual(['mid', 'new']); // = 11:00Z
    expect(await ids('?_since=2024-06-01T13:00:00+02:00')).toEqual(['mid', 'new']); // unencoded +
    expect(await ids('?_since=2024-06-01T12:00:00.000001Z')).toEqual(['new']);
    expect(await ids('?_since=2030-01-01T00:00:00Z')).toEqual([]);
  });

  test('a bad _since is 400 with an OperationOutcome, before any body', async () => {
    for (const bad of ['yesterday', '2024-13-01', '2024-02-30', '2024-01-01T25:00:00Z', '', "2024-01-01' or '1'='1"]) {
      const res = await server.request(`/Practitioner/$dump?_since=${encodeURIComponent(bad)}`, identity);
      expect(res.status).toBe(400);
      const body = await res.json();
      expect(body.resourceType).toBe('OperationOutcome');
      expect(body.message).toContain('_since');
    }
  });

  test('unknown type is 404 before any body, even with bad parameters', async () => {
    for (const query of ['', '?_since=bad']) {
      const res = await server.request(`/Unicorn/$dump${query}`, identity);
      expect(res.status).toBe(404);
      expect((await res.json()).message).toContain('Unicorn');
    }
  });

  test('gzip=true and Accept-Encoding: gzip give Content-Encoding: gzip; gzip=false wins over the header', async () => {
    const plain = await (await server.request('/Practitioner/$dump', identity)).text();
    for (const [query, encoding] of [['?gzip=true', 'identity'], ['', 'gzip, deflate'], ['?gzip=true&fhir=true', 'identity']]) {
      const res = await fetch(`${server.url}/Practitioner/$dump${query}`, {
        headers: { authorization: `Basic ${btoa('root:test-root-secret')}`, 'accept-encoding': encoding! },
        decompress: false,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-encoding')).toBe('gzip');
      expect(gunzipSync(new Uint8Array(await res.arrayBuffer())).toString('utf8')).toBe(plain);
    }
    const off = await server.request('/Practitioner/$dump?gzip=false', { headers: { 'accept-encoding': 'gzip' } });
    expect(off.headers.get('content-encoding')).toBeNull();
    expect(await off.text()).toBe(plain);
  });

  test('gzip and fhir only take true or false', async () => {
    expect((await server.request('/Practitioner/$dump?gzip=yes', identity)).status).toBe(400);
    expect((await server.request('/Practitioner/$dump?fhir=1', identity)).status).toBe(400);
    expect((await server.request('/Practitioner/$dump?fhir=true', identity)).status).toBe(200);
  });
});
