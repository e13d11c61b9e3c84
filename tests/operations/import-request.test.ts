/**
 * `POST /$import` requests: malformed bodies are a 400 naming the field; the Aidbox shapes (YAML,
 * `resource:` wrapper, `resourceType` alias) work; file sources are confined to the import root.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { patients, startImport, startSourceServer, waitFor, type SourceServer } from '../helpers/import-sources.ts';

let server: TestServer;
let sources: SourceServer;

beforeAll(async () => {
  server = await startTestServer();
  sources = startSourceServer();
  sources.set('/Patient.ndjson', patients(5, 'req'));
  fs.mkdirSync(path.join(server.importRoot, 'sub'));
  fs.writeFileSync(path.join(server.importRoot, 'sub', 'Patient.ndjson'), patients(7, 'file'));
  fs.writeFileSync(path.join(server.importRoot, 'Patient.ndjson.gz'), Bun.gzipSync(patients(9, 'gzfile')));
});
afterAll(async () => {
  await server.stop();
  await sources.stop();
});

describe('malformed requests → 400 naming the field', () => {
  const url = () => sources.url('/Patient.ndjson');
  const cases: [string, () => unknown, string][] = [
    ['a body that is not an object', () => [1, 2], 'body must be an object'],
    ['start without inputs', () => ({ id: 'x1' }), 'inputs'],
    ['empty inputs', () => ({ inputs: [] }), 'inputs'],
    ['an input without url', () => ({ inputs: [{ type: 'Patient' }] }), 'inputs[0].url'],
    ['an unknown action', () => ({ id: 'x2', action: 'restart' }), 'action'],
    ['an unknown resource type', () => ({ inputs: [{ type: 'Patient', url: url() }, { type: 'Patientt', url: url() }] }), 'inputs[1]'],
    ['an id that is not a FHIR id', () => ({ id: 'bad id!', inputs: [{ url: url() }] }), 'id'],
    ['a bad contentEncoding', () => ({ contentEncoding: 'br', inputs: [{ url: url() }] }), 'contentEncoding'],
    ['update that is not a boolean', () => ({ update: 'yes', inputs: [{ url: url() }] }), 'update'],
    ['a bad storageDetail.type', () => ({ inputs: [{ url: url(), storageDetail: { type: 's3' } }] }), 'inputs[0].storageDetail.type'],
    ['a relative url with storageDetail url', () => ({ inputs: [{ url: 'Patient.ndjson' }] }), 'inputs[0].url'],
    ['an unsupported inputFormat', () => ({ inputFormat: 'text/csv', inputs: [{ url: url() }] }), 'inputFormat'],
    ['pause without id', () => ({ action: 'pause' }), 'id'],
    ['type and resourceType that differ', () => ({ inputs: [{ type: 'Patient', resourceType: 'Observation', url: url() }] }), 'inputs[0]'],
  ];
  for (const [name, body, field] of cases) {
    test(name, async () => {
      const res = await startImport(server, body() as Record<string, unknown>);
      expect(res.status).toBe(400);
      const outcome = (await res.json()) as Record<string, any>;
      expect(outcome.message).toContain(field);
      expect(outcome.message).toStartWith('Invalid $import request');
    });
  }

  test('a wrong type inside a nested resource: wrapper is named too', async () => {
    const res = await startImport(server, { resource: { inputs: [{ type: 'Patient', url: 42 }] } });
    expect(res.status).toBe(400);
    expect(((await res.json()) as Record<string, any>).message).toContain('inputs[0].url');
  });
});

describe('Aidbox request shapes', () => {
  test('YAML with the resource: wrapper and resourceType, answered in YAML under /fhir', async () => {
    const yaml = `resource:\n  id: yaml-1\n  inputFormat: application/fhir+ndjson\n  inputSource: source\n  contentEncoding: plain\n  inputs:\n    - resourceType: Patient\n      url: ${sources.url('/Patient.ndjson')}\n      storageDetail: {type: url}\n`;
    const res = await server.request('/fhir/$import', { method: 'POST', body: yaml, headers: { 'content-type': 'text/yaml', accept: 'text/yaml' } });
    expect(res.status).toBe(201);
    expect(res.headers.get('content-type')).toContain('yaml');
    expect(await res.text()).toContain('id: yaml-1');
    const done = await waitFor(server, 'yaml-1', (s) => s.status === 'done');
    expect(done).toMatchObject({ inputSource: 'source', contentEncoding: 'plain', imported: 5 });
    expect((await server.request('/fhir/BulkImportStatus/yaml-1')).status).toBe(200);
  });

  test('GET /BulkImportStatus/<unknown> → 404 with a message', async () => {
    const res = await server.request('/BulkImportStatus/never-started');
    expect(res.status).toBe(404);
    expect(((await res.json()) as Record<string, any>).message).toContain('never-started');
  });
});

describe('file sources under FHIRHOSE_IMPORT_ROOT', () => {
  test('resource-file (relative), an absolute path and a file:// URL all load; gzip is found from the bytes', async () => {
    const res = await startImport(server, {
      id: 'files',
      inputs: [
        { type: 'Patient', url: 'sub/Patient.ndjson', storageDetail: { type: 'resource-file' } },
        { type: 'Patient', url: path.join(server.importRoot, 'Patient.ndjson.gz') },
        { type: 'Patient', url: pathToFileURL(path.join(server.importRoot, 'sub', 'Patient.ndjson')).href },
      ],
    });
    expect(res.status).toBe(201);
    const done = await waitFor(server, 'files', (s) => s.status !== 'active');
    expect(done.status).toBe('done');
    expect(done.inputs.map((i: { imported: number }) => i.imported)).toEqual([7, 9, 7]);
    expect(done.inputs[0].bytesTotal).toBe(fs.statSync(path.join(server.importRoot, 'sub', 'Patient.ndjson')).size);
  });

  const outside: [string, () => Record<string, unknown>][] = [
    ['an absolute path outside the root', () => ({ url: '/etc/passwd' })],
    ['a file:// URL outside the root', () => ({ url: 'file:///etc/hostname' })],
    ['a resource-file that climbs out with ../', () => ({ url: '../../etc/passwd', storageDetail: { type: 'resource-file' } })],
  ];
  for (const [name, input] of outside) {
    test(`${name} → 403 at start, and no session is created`, async () => {
      const id = `outside-${name.length}`;
      const res = await startImport(server, { id, inputs: [{ type: 'Patient', ...input() }] });
      expect(res.status).toBe(403);
      const outcome = (await res.json()) as Record<string, any>;
      expect(outcome.message).toContain('inputs[0]');
      expect(outcome.message).toContain('outside FHIRHOSE_IMPORT_ROOT');
      expect((await server.request(`/BulkImportStatus/${id}`)).status).toBe(404);
    });
  }

  test('a file under the root that does not exist yet → the session errors naming it; created, force-resume → done', async () => {
    const res = await startImport(server, { id: 'later', inputs: [{ type: 'Patient', url: 'later.ndjson', storageDetail: { type: 'resource-file' } }] });
    expect(res.status).toBe(201);
    const failed = await waitFor(server, 'later', (s) => s.status !== 'active');
    expect(failed.status).toBe('error');
    expect(failed.message).toContain('later.ndjson');
    fs.writeFileSync(path.join(server.importRoot, 'later.ndjson'), patients(3, 'later'));
    await server.request('/$import', { method: 'POST', json: { id: 'later', action: 'force-resume' } });
    expect((await waitFor(server, 'later', (s) => s.status !== 'active')).status).toBe('done');
  });
});
