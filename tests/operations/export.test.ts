/** $export at system level (SPEC §12): the whole client flow, the files against $dump, the manifest. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { copyPatients, syntheaPatients } from './dump-helpers.ts';
import { download, kickOff, outputByType, waitForManifest } from '../helpers/export.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_EXPORT_FILE_RESOURCES: '1000' });
  const put = await server.request('/', { method: 'PUT', json: syntheaPatients() });
  expect(put.status).toBe(200);
  await copyPatients(server.sql, 2500);
  await server.request('/', { method: 'PUT', json: [
    { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/bulk-1' } },
    { resourceType: 'Organization', id: 'org1', name: 'Acme' },
  ] });
});
afterAll(async () => { await server.stop(); });

async function dumpLines(type: string): Promise<Record<string, unknown>[]> {
  const res = await server.request(`/${type}/$dump`, { headers: { 'accept-encoding': 'identity' } });
  expect(res.status).toBe(200);
  return (await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

const byId = (a: Record<string, unknown>, b: Record<string, unknown>) => String(a.id).localeCompare(String(b.id));

describe('$export system level', () => {
  test('GET /$export: 202, then a manifest whose files hold exactly what $dump gives, split at the configured size', async () => {
    const status = await kickOff(server, '/$export');
    const manifest = await waitForManifest(server, status);
    expect(manifest.requiresAccessToken).toBe(true);
    expect(manifest.error).toEqual([]);
    expect(manifest.deleted).toEqual([]);
    expect(manifest.request).toBe(`${server.url}/$export`);
    expect(Date.parse(manifest.transactionTime)).toBeLessThanOrEqual(Date.now());
    expect(manifest.output.map((o) => o.type).sort()).toEqual(['Observation', 'Organization', 'Patient', 'Patient', 'Patient']);
    for (const item of manifest.output) expect(item.count).toBeLessThanOrEqual(1000);
    const files = await outputByType(server, manifest);
    for (const type of ['Patient', 'Observation', 'Organization']) {
      expect(files.get(type)!.sort(byId)).toEqual((await dumpLines(type)).sort(byId));
    }
    // server types (Client, AccessPolicy) never leave through $export
    expect(files.has('Client')).toBe(false);
  });

  test('POST /fhir/$export with a Parameters body: _type and the status URL under /fhir', async () => {
    const status = await kickOff(server, '/fhir/$export', { method: 'POST', json: { resourceType: 'Parameters', parameter: [{ name: '_type', valueString: 'Observation' }] } });
    expect(status.startsWith('/fhir/')).toBe(true);
    const manifest = await waitForManifest(server, status);
    expect(manifest.output).toEqual([{ type: 'Observation', url: expect.stringContaining('/fhir/$export-file/'), count: 1 }]);
    expect(manifest.request).toBe(`${server.url}/fhir/$export`);
    expect((await download(server, manifest.output[0]!.url))[0]!.id).toBe('o1');
  });
});

describe('$export behind a proxy', () => {
  test('FHIRHOSE_BASE_URL is the base of the status URL, the manifest request and the file URLs', async () => {
    const proxied = await startTestServer({ FHIRHOSE_BASE_URL: 'https://fhir.example.org/r4/' });
    try {
      const res = await proxied.request('/$export?_type=Patient', { headers: { prefer: 'respond-async' } });
      expect(res.status).toBe(202);
      const location = res.headers.get('content-location')!;
      expect(location).toMatch(/^https:\/\/fhir\.example\.org\/r4\/\$export-status\/[0-9a-f-]{36}$/);
      const manifest = await waitForManifest(proxied, new URL(location).pathname.replace('/r4', ''));
      expect(manifest.request).toBe('https://fhir.example.org/r4/$export?_type=Patient');
    } finally {
      await proxied.stop();
    }
  });
});
