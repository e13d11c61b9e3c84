/**
 * The HTTP layer hands operations the authenticated caller (OperationContext.caller): `$import`
 * writes who started and who changed a session into the log.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { addClient, type TestClient } from '../helpers/clients.ts';
import { patients, startSourceServer, waitFor, type SourceServer } from '../helpers/import-sources.ts';
import { basic, startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
let sources: SourceServer;
let bulk: TestClient;
const lines: string[] = [];

beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_IMPORT_BATCH_LINES: '1' }, { log: (line) => lines.push(line) });
  sources = startSourceServer();
  const body = patients(5);
  sources.set('/held.ndjson', body, { holdAfter: body.indexOf('\n') + 1 });
  bulk = await addClient(server, 'bulk-client', [{ engine: 'allow' }]);
});
afterAll(async () => {
  await server.stop();
  await sources.stop();
});

const start = (id: string, auth: string) => server.request('/$import', {
  method: 'POST', auth, json: { id, inputs: [{ type: 'Patient', url: sources.url('/held.ndjson') }] },
});

test('the client that starts an import and the one that pauses it are both named in the log', async () => {
  expect((await start('by-bulk', bulk.auth)).status).toBe(201);
  expect(lines).toContain('import by-bulk: new → active (1 input) by client bulk-client');
  await waitFor(server, 'by-bulk', (s) => s.inputs[0].checkpoint >= 1);
  const pause = await server.request('/$import', { method: 'POST', json: { id: 'by-bulk', action: 'pause' } });
  expect(pause.status).toBe(200);
  expect(lines).toContain('import by-bulk: active → paused by client root');
});

test('a wrong secret or no credentials start nothing and log nothing', async () => {
  expect((await start('by-nobody', basic('bulk-client', 'wrong'))).status).toBe(401);
  expect((await server.request('/$import', {
    method: 'POST', auth: null, json: { id: 'by-nobody', inputs: [{ type: 'Patient', url: sources.url('/held.ndjson') }] },
  })).status).toBe(401);
  expect(lines.filter((line) => line.includes('by-nobody'))).toEqual([]);
  expect((await server.request('/BulkImportStatus/by-nobody')).status).toBe(404);
});
