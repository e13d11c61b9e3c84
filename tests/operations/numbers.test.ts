/**
 * Numbers are stored and served as written (fhir/json-numbers.ts): `0.0` is not `0`, `1.50` is not
 * `1.5`, 20 digits are 20 digits — FHIR gives a decimal's precision meaning, and a raw COPY of the
 * same lines keeps it. Through every way in (`$load`, `$import`, POST, PUT, `PUT /`, JSON or YAML) and out
 * (read, search, history, YAML, `$dump`, `$export`), checked against what PostgreSQL holds.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { gunzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { serveSources, type SourceServer } from '../helpers/sources.ts';
import { startImport, waitFor } from '../helpers/import-sources.ts';
import { kickOff, waitForManifest } from '../helpers/export.ts';

let server: TestServer;
let sources: SourceServer;
beforeAll(async () => {
  server = await startTestServer();
  sources = serveSources();
});
afterAll(async () => { sources.stop(); await server.stop(); });

// As bulk files write them: a Synthea ExplanationOfBenefit's `"value": 0.0`, money with cents, a
// 20-digit integer, a decimal past a double's precision, and numbers a double writes the same.
const NUMBERS = '"extension":[{"url":"a","valueDecimal":0.0},{"url":"b","valueDecimal":120.50},{"url":"c","valueDecimal":12345678901234567890},{"url":"d","valueDecimal":3.14159265358979323846},{"url":"e","valueDecimal":1.50e-3},{"url":"f","valueDecimal":2.5},{"url":"g","valueInteger":7}]';
const AS_STORED = ['0.0', '120.50', '12345678901234567890', '3.14159265358979323846', '0.00150', '2.5', '7'];
const line = (id: string) => `{"resourceType":"Patient","id":"${id}",${NUMBERS}}`;

/** The valueDecimal/valueInteger texts of one resource, as JSON text, in order. */
function numbersIn(json: string): string[] {
  return [...json.matchAll(/"value(?:Decimal|Integer)":\s*([-0-9.eE+]+)/g)].map((m) => m[1]!);
}

async function inDatabase(id: string): Promise<string[]> {
  const rows = await server.sql.unsafe(`select e->'valueDecimal' as d, e->'valueInteger' as i from patient, jsonb_array_elements(resource->'extension') e where id = $1`, [id]);
  const [row] = await server.sql.unsafe(`select resource::text as text from patient where id = $1`, [id]);
  expect(rows.length).toBe(7);
  return numbersIn(row!.text as string);
}

test('$load and $import store the numbers as written, and every read gives them back so', async () => {
  const load = await server.request('/$load', { method: 'POST', json: { source: sources.put('/n.ndjson', `${line('n-load')}\n`) } });
  expect(load.status).toBe(200);
  const start = await startImport(server, { id: 'numbers', inputs: [{ resourceType: 'Patient', url: sources.put('/i.ndjson', `${line('n-import')}\n`) }] });
  expect(start.status).toBeLessThan(300);
  await waitFor(server, 'numbers', (s) => s.status === 'done' || s.status === 'error');

  for (const id of ['n-load', 'n-import']) {
    expect(await inDatabase(id)).toEqual(AS_STORED);
    const read = await server.request(`/Patient/${id}`);
    expect(numbersIn(await read.text())).toEqual(AS_STORED);
    expect(numbersIn(await (await server.request(`/Patient?_id=${id}`)).text())).toEqual(AS_STORED);
    expect(numbersIn(await (await server.request(`/Patient/${id}/_history`)).text())).toEqual(AS_STORED);
    const yaml = await (await server.request(`/Patient/${id}`, { headers: { accept: 'text/yaml' } })).text();
    expect([...yaml.matchAll(/value(?:Decimal|Integer): (\S+)/g)].map((m) => m[1])).toEqual(AS_STORED);
  }
  const dump = await (await server.request('/Patient/$dump')).text();
  const dumped = dump.split('\n').filter((l) => l.includes('"n-load"'));
  expect(dumped.length).toBe(1);
  expect(numbersIn(dumped[0]!)).toEqual(AS_STORED);
});

test('POST, PUT and PUT / store the numbers as written; parameters are still read as numbers', async () => {
  const post = await server.request('/Patient', { method: 'POST', body: line('n-post'), headers: { 'content-type': 'application/fhir+json' } });
  expect(post.status).toBe(201);
  expect(numbersIn(await post.text())).toEqual(AS_STORED);
  const put = await server.request('/Patient/n-put', { method: 'PUT', body: line('n-put'), headers: { 'content-type': 'application/fhir+json' } });
  expect(put.status).toBe(201);
  expect(numbersIn(await put.text())).toEqual(AS_STORED);
  const batch = await server.request('/', { method: 'PUT', body: `[${line('n-batch')}]`, headers: { 'content-type': 'application/json' } });
  expect(batch.status).toBe(200);
  expect(numbersIn(await batch.text())).toEqual(AS_STORED);
  // YAML bodies too: a number YAML writes as JSON does is kept; YAML's own forms (0x10) are numbers
  const yaml = [
    'resourceType: Patient', 'id: n-yaml', 'extension:',
    ...[...NUMBERS.matchAll(/"url":"(\w)","(value\w+)":([^}]+)/g)].map(([, url, key, value]) => `- {url: ${url}, ${key}: ${value}}`),
  ].join('\n');
  const putYaml = await server.request('/Patient/n-yaml', { method: 'PUT', body: yaml, headers: { 'content-type': 'text/yaml' } });
  expect(putYaml.status).toBe(201);
  const hex = await server.request('/Patient/n-hex', { method: 'PUT', body: 'resourceType: Patient\nextension: [{url: h, valueInteger: 0x10}]', headers: { 'content-type': 'text/yaml' } });
  expect(numbersIn(await hex.text())).toEqual(['16']);
  for (const id of ['n-post', 'n-put', 'n-batch', 'n-yaml']) expect(await inDatabase(id)).toEqual(AS_STORED);

  // a number with a trailing zero where the server wants a number: still a number to it
  const dumpSql = await server.request('/$dump-sql', { method: 'POST', body: '{"query":"select id from patient where id = \'n-put\'","limit":10.0}', headers: { 'content-type': 'application/json' } });
  expect(dumpSql.status).toBeLessThan(500);
  // a Client's secret that is a number is refused as before, not stored
  const client = await server.request('/Client/n', { method: 'PUT', body: '{"resourceType":"Client","id":"n","secret":1.0}', headers: { 'content-type': 'application/json' } });
  expect(client.status).toBe(400);
  expect(await client.text()).toContain('Client.secret must be a string');
});

test('$export files hold the numbers as written', async () => {
  const status = await kickOff(server, '/$export?_type=Patient');
  const manifest = await waitForManifest(server, status);
  const texts: string[] = [];
  for (const file of manifest.output) {
    const res = await server.request(new URL(file.url).pathname, { headers: { 'accept-encoding': 'identity' } });
    const body = Buffer.from(await res.arrayBuffer());
    texts.push((body[0] === 0x1f && body[1] === 0x8b ? gunzipSync(body) : body).toString('utf8'));
  }
  const lines = texts.join('').split('\n').filter((l) => /"id":"n-(load|import|post|put|batch|yaml)"/.test(l));
  expect(lines.length).toBe(6);
  for (const l of lines) expect(numbersIn(l)).toEqual(AS_STORED);
});
