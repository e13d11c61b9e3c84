/**
 * SPEC §8's action × state table, one test per cell, over real HTTP against a real server whose
 * sources come from a real local HTTP server. Sessions are held `active` by a source that stops
 * sending after its first lines (batch size 1, so they commit and then wait).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { patients, startImport, startSourceServer, status, waitFor, type SourceServer } from '../helpers/import-sources.ts';

type State = 'active' | 'paused' | 'aborted' | 'error' | 'done';

let server: TestServer;
let sources: SourceServer;
let seq = 0;

beforeAll(async () => {
  // Every session held `active` keeps a job claimed (waiting on its source): room for all of them.
  server = await startTestServer({ FHIRHOSE_IMPORT_BATCH_LINES: '1', FHIRHOSE_JOB_CONCURRENCY: '64' });
  sources = startSourceServer();
  const body = patients(20);
  sources.set('/held.ndjson', body, { holdAfter: body.indexOf('\n', body.indexOf('\n') + 1) + 1 });
  sources.set('/small.ndjson', patients(3, 'small'));
});
afterAll(async () => {
  await server.stop();
  await sources.stop();
});

async function act(id: string, action: string, extra: Record<string, unknown> = {}): Promise<Response> {
  return server.request('/$import', { method: 'POST', json: { id, action, ...extra } });
}

/** A new session in `state`, reached only through actions and the runner. */
async function sessionIn(state: State, extra: Record<string, unknown> = {}): Promise<string> {
  const id = `s${++seq}-${state}`;
  const file = state === 'error' ? '/missing.ndjson' : state === 'done' ? '/small.ndjson' : '/held.ndjson';
  const res = await startImport(server, { id, inputs: [{ type: 'Patient', url: sources.url(file) }], ...extra });
  expect(res.status).toBe(201);
  if (state === 'active' || state === 'paused' || state === 'aborted') {
    await waitFor(server, id, (s) => s.inputs[0].checkpoint >= 1);
  }
  if (state === 'paused') expect((await act(id, 'pause', extra)).status).toBe(200);
  if (state === 'aborted') expect((await act(id, 'abort', extra)).status).toBe(200);
  await waitFor(server, id, (s) => s.status === state);
  return id;
}

async function expectRefused(res: Response, code: number): Promise<Record<string, any>> {
  expect(res.status).toBe(code);
  const body = (await res.json()) as Record<string, any>;
  expect(body.resourceType).toBe('OperationOutcome');
  expect(typeof body.message).toBe('string');
  expect(body.message.length).toBeGreaterThan(10);
  expect(body.issue[0].diagnostics).toBe(body.message);
  return body;
}

describe('start', () => {
  test('a new id → 201 with Content-Location and the session', async () => {
    const res = await startImport(server, { id: 'fresh-1', inputs: [{ type: 'Patient', url: sources.url('/small.ndjson') }] });
    expect(res.status).toBe(201);
    expect(res.headers.get('content-location')).toBe('/BulkImportStatus/fresh-1');
    const body = (await res.json()) as Record<string, any>;
    expect(body).toMatchObject({ resourceType: 'BulkImportStatus', id: 'fresh-1', status: 'active' });
    expect(body.inputs[0]).toMatchObject({ type: 'Patient', url: sources.url('/small.ndjson') });
  });

  test('no id → 201 with a generated UUID in Content-Location', async () => {
    const res = await startImport(server, { inputs: [{ resourceType: 'Patient', url: sources.url('/small.ndjson') }] });
    expect(res.status).toBe(201);
    const body = (await res.json()) as Record<string, any>;
    expect(body.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(res.headers.get('content-location')).toBe(`/BulkImportStatus/${body.id}`);
    await waitFor(server, body.id, (s) => s.status === 'done');
  });

  for (const state of ['active', 'paused', 'aborted', 'error', 'done'] as const) {
    test(`an id that exists (${state}) → 409, session unchanged`, async () => {
      const id = await sessionIn(state);
      const before = await status(server, id);
      await expectRefused(await startImport(server, { id, inputs: [{ type: 'Patient', url: sources.url('/small.ndjson') }] }), 409);
      const after = await status(server, id);
      expect(after.status).toBe(state);
      expect(after.inputs[0].url).toBe(before.inputs[0].url);
    });
  }
});

const TABLE: { action: string; from: State; to?: State }[] = [
  { action: 'pause', from: 'active', to: 'paused' },
  { action: 'pause', from: 'paused' },
  { action: 'pause', from: 'aborted' },
  { action: 'pause', from: 'error' },
  { action: 'pause', from: 'done' },
  { action: 'resume', from: 'paused', to: 'active' },
  { action: 'resume', from: 'active' },
  { action: 'resume', from: 'aborted' },
  { action: 'resume', from: 'error' },
  { action: 'resume', from: 'done' },
  { action: 'abort', from: 'active', to: 'aborted' },
  { action: 'abort', from: 'paused', to: 'aborted' },
  { action: 'abort', from: 'aborted' },
  { action: 'abort', from: 'error' },
  { action: 'abort', from: 'done' },
  { action: 'force-resume', from: 'active', to: 'active' },
  { action: 'force-resume', from: 'paused', to: 'active' },
  { action: 'force-resume', from: 'error', to: 'active' },
  { action: 'force-resume', from: 'done' },
  { action: 'force-resume', from: 'aborted' },
];

describe('actions', () => {
  for (const { action, from, to } of TABLE) {
    const name = to ? `${action} on ${from} → 200, ${to}` : `${action} on ${from} → 406, unchanged`;
    test(name, async () => {
      const id = await sessionIn(from);
      const res = await act(id, action);
      if (!to) {
        const body = await expectRefused(res, 406);
        expect(body.message).toContain(from);
        expect((await status(server, id)).status).toBe(from);
        return;
      }
      expect(res.status).toBe(200);
      expect(((await res.json()) as Record<string, any>).status).toBe(to);
      if (to !== 'active' || from !== 'error') expect((await status(server, id)).status).toBe(to);
    });
  }
});

describe('unknown id and wrong secret', () => {
  for (const action of ['pause', 'resume', 'abort', 'force-resume']) {
    test(`${action} on an unknown id → 404`, async () => {
      const body = await expectRefused(await act('no-such-session', action), 404);
      expect(body.message).toContain('no-such-session');
    });

    test(`${action} with a wrong or missing secret → 403, unchanged`, async () => {
      const id = await sessionIn(action === 'resume' ? 'paused' : 'active', { secret: 'right-secret' });
      const before = (await status(server, id)).status;
      await expectRefused(await act(id, action, { secret: 'wrong-secret' }), 403);
      await expectRefused(await act(id, action), 403);
      expect((await status(server, id)).status).toBe(before);
      expect((await act(id, action, { secret: 'right-secret' })).status).toBe(200);
    });
  }

  test('the secret is never shown, nor its hash', async () => {
    const id = await sessionIn('active', { secret: 'very-secret-value' });
    const text = JSON.stringify(await status(server, id)) + (await (await server.request('/BulkImportStatus')).text());
    expect(text).not.toContain('very-secret-value');
    expect(text).not.toContain('argon2');
  });
});
