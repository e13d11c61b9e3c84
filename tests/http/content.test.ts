/** SPEC §1: JSON or YAML request bodies, YAML responses on Accept, 400/413/415 for bad bodies. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import YAML from 'yaml';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
let small: TestServer;
beforeAll(async () => {
  server = await startTestServer();
  small = await startTestServer({ FHIRHOSE_BODY_LIMIT: '2048' });
});
afterAll(async () => {
  await server.stop();
  await small.stop();
});

async function expectOutcome(res: Response, status: number, message: RegExp) {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toStartWith('application/json');
  const body = await res.json();
  expect(body.resourceType).toBe('OperationOutcome');
  expect(body.message).toMatch(message);
  expect(body.issue[0].diagnostics).toBe(body.message);
}

describe('content: happy', () => {
  test('application/json and application/fhir+json bodies are accepted, with a charset too', async () => {
    for (const [i, type] of ['application/json', 'application/fhir+json', 'application/fhir+json; charset=utf-8'].entries()) {
      const res = await server.request(`/Patient/j${i}`, { method: 'PUT', body: JSON.stringify({ active: true }), headers: { 'content-type': type } });
      expect(res.status).toBe(201);
    }
  });

  test('a YAML body creates the same resource a JSON one does', async () => {
    const yaml = 'resourceType: Patient\nname:\n- family: Yaml\n  given: [A, B]\nactive: off\nbirthDate: "2000-01-01"\n';
    const res = await server.request('/Patient/yaml-1', { method: 'PUT', body: yaml, headers: { 'content-type': 'text/yaml' } });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ name: [{ family: 'Yaml', given: ['A', 'B'] }], active: 'off', birthDate: '2000-01-01' });
  });

  test('Accept: text/yaml answers YAML that parses back to the JSON answer', async () => {
    const json = await (await server.request('/Patient/yaml-1')).json();
    for (const accept of ['text/yaml', 'application/yaml', 'application/x-yaml', 'application/json;q=0.5, text/yaml']) {
      const res = await server.request('/Patient/yaml-1', { headers: { accept } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toStartWith('text/yaml');
      const text = await res.text();
      expect(text).toStartWith('resourceType: Patient\n');
      expect(YAML.parse(text)).toEqual(json);
    }
  });

  test('YAML answers cover bundles, created resources and PUT /', async () => {
    const bundle = YAML.parse(await (await server.request('/Patient?_count=1', { headers: { accept: 'text/yaml' } })).text());
    expect(bundle).toMatchObject({ resourceType: 'Bundle', type: 'searchset' });
    const created = await server.request('/Patient', { method: 'POST', json: {}, headers: { accept: 'text/yaml' } });
    expect(created.status).toBe(201);
    expect(YAML.parse(await created.text())).toMatchObject({ resourceType: 'Patient' });
    const batch = await server.request('/', { method: 'PUT', body: '- {resourceType: Patient, id: yb}\n', headers: { 'content-type': 'text/yaml', accept: 'text/yaml' } });
    expect(YAML.parse(await batch.text())).toMatchObject([{ resourceType: 'Patient', id: 'yb' }]);
  });

  test('JSON is the default, and wins when ranked above YAML', async () => {
    for (const accept of [undefined, '*/*', 'application/fhir+json', 'application/json, text/yaml;q=0.5', 'text/html']) {
      const res = await server.request('/Patient/yaml-1', accept ? { headers: { accept } } : {});
      expect(res.headers.get('content-type')).toStartWith('application/json');
      expect((await res.json()).id).toBe('yaml-1');
    }
  });

  test('errors are YAML too when YAML is asked for', async () => {
    const res = await server.request('/Patient/missing', { headers: { accept: 'text/yaml' } });
    expect(res.status).toBe(404);
    const body = YAML.parse(await res.text());
    expect(body).toMatchObject({ resourceType: 'OperationOutcome', message: 'Patient/missing not found' });
  });
});

describe('content: errors', () => {
  test('malformed JSON → 400', async () => {
    await expectOutcome(await server.request('/Patient', { method: 'POST', body: '{"resourceType": "Patient",', headers: { 'content-type': 'application/json' } }), 400, /not valid JSON/);
  });

  test('malformed YAML → 400', async () => {
    await expectOutcome(await server.request('/Patient', { method: 'POST', body: 'a: [1, 2\nb: }', headers: { 'content-type': 'text/yaml' } }), 400, /not valid YAML/);
  });

  test('an empty body → 400', async () => {
    await expectOutcome(await server.request('/Patient', { method: 'POST', body: '', headers: { 'content-type': 'application/json' } }), 400, /body is empty/);
  });

  test('a body nested deeper than 200 levels → 400 (not 500) on PUT, POST and PUT /; 200 levels are fine', async () => {
    const deep = (n: number) => `{"resourceType":"Patient","extension":${'['.repeat(n)}${']'.repeat(n)}}`;
    const json = { 'content-type': 'application/json' };
    for (const n of [201, 100_000]) {
      await expectOutcome(await server.request('/Patient/deep', { method: 'PUT', body: deep(n), headers: json }), 400, /nested deeper than 200 levels/);
      await expectOutcome(await server.request('/Patient', { method: 'POST', body: deep(n), headers: json }), 400, /nested deeper than 200 levels/);
      await expectOutcome(await server.request('/', { method: 'PUT', body: `[${deep(n)}]`, headers: json }), 400, /nested deeper than 200 levels/);
      await expectOutcome(await server.request('/Patient/deep', { method: 'PUT', body: '['.repeat(n) + ']'.repeat(n), headers: { 'content-type': 'text/yaml' } }), 400, /nested deeper than 200 levels/);
    }
    expect((await server.request('/Patient/deep')).status).toBe(404);
    const ok = await server.request('/Patient/shallow', { method: 'PUT', body: `{"extension":[{"url":"u","valueString":"${'['.repeat(500)}"}]}`, headers: json });
    expect(ok.status).toBe(201);
  });

  test('a body that is not UTF-8 → 400', async () => {
    await expectOutcome(await server.request('/Patient', { method: 'POST', body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), headers: { 'content-type': 'application/json' } }), 400, /not UTF-8/);
  });

  test('a wrong or missing content type → 415', async () => {
    for (const type of ['text/plain', 'application/xml', 'application/x-www-form-urlencoded']) {
      await expectOutcome(await server.request('/Patient', { method: 'POST', body: '{}', headers: { 'content-type': type } }), 415, /is not supported/);
    }
    await expectOutcome(await server.request('/Patient', { method: 'POST', body: new Blob(['{}']) }), 415, /"\(none\)" is not supported/);
  });

  test('a body over FHIRHOSE_BODY_LIMIT → 413, by Content-Length', async () => {
    const big = JSON.stringify({ resourceType: 'Patient', text: 'x'.repeat(3000) });
    await expectOutcome(await small.request('/Patient', { method: 'POST', body: big, headers: { 'content-type': 'application/json' } }), 413, /larger than the limit of 2048 bytes/);
    const ok = JSON.stringify({ resourceType: 'Patient', text: 'x'.repeat(1000) });
    expect((await small.request('/Patient', { method: 'POST', body: ok, headers: { 'content-type': 'application/json' } })).status).toBe(201);
  });

  test('a chunked body over FHIRHOSE_BODY_LIMIT (no Content-Length) → 413, and nothing is stored', async () => {
    const chunks = Array.from({ length: 8 }, (_, i) => new TextEncoder().encode(i === 0 ? '[{"resourceType":"Patient","id":"big","text":"' : 'y'.repeat(500)));
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const next = chunks.shift();
        if (next) controller.enqueue(next);
        else { controller.enqueue(new TextEncoder().encode('"}]')); controller.close(); }
      },
    });
    const res = await small.request('/', { method: 'PUT', body, headers: { 'content-type': 'application/json' } });
    await expectOutcome(res, 413, /FHIRHOSE_BODY_LIMIT/);
    const [row] = await small.sql`select count(*)::int as n from patient where id = 'big'`;
    expect(row!.n).toBe(0);
  });
});
