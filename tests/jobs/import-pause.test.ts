/**
 * Pause and resume with real batches: a paused session writes nothing more, a resumed one goes on
 * from its checkpoint, and the final counts are exact. Also the progress fields while running.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import http from 'node:http';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { count, patients, startImport, startSourceServer, status, waitFor, type SourceServer } from '../helpers/import-sources.ts';
import { within } from '../helpers/wait.ts';

let server: TestServer;
let sources: SourceServer;

beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_IMPORT_BATCH_LINES: '50' });
  sources = startSourceServer();
});
afterAll(async () => {
  await server.stop();
  await sources.stop();
});

async function act(id: string, action: string): Promise<Record<string, any>> {
  const res = await server.request('/$import', { method: 'POST', json: { id, action } });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, any>;
}

test('a paused import writes nothing more; resumed, it ends with exactly the input', async () => {
  // The source holds after half of its 2,000 lines: the import cannot end before the pause.
  const body = patients(2000, 'slow');
  sources.set('/slow.ndjson', body, { holdAfter: Math.floor(body.length / 2) });
  await startImport(server, { id: 'pausing', inputs: [{ type: 'Patient', url: sources.url('/slow.ndjson') }] });
  await waitFor(server, 'pausing', (s) => s.inputs[0].checkpoint >= 100);

  const paused = await act('pausing', 'pause');
  expect(paused.status).toBe('paused');
  const rowsAtPause = await count(server, 'patient');
  const atPause = await status(server, 'pausing');
  expect(atPause.inputs[0].status).toBe('paused');
  expect(atPause.inputs[0].checkpoint).toBeLessThan(2000);
  expect(rowsAtPause).toBe(atPause.inputs[0].imported);

  // the paused input lets go of its source, which still holds: nothing more can come from it
  await within(30_000, () => sources.endings('/slow.ndjson').length > 0, 'the paused input letting go of its source');
  expect(sources.endings('/slow.ndjson')).toEqual(['cancelled']);
  expect(await count(server, 'patient')).toBe(rowsAtPause);
  const later = await status(server, 'pausing');
  expect(later.inputs[0].checkpoint).toBe(atPause.inputs[0].checkpoint);
  expect(later.durationMs).toBe(atPause.durationMs);
  expect(later.etaSeconds).toBeUndefined();

  const hitsBefore = sources.hits('/slow.ndjson');
  sources.release('/slow.ndjson');
  expect((await act('pausing', 'resume')).status).toBe('active');
  const done = await waitFor(server, 'pausing', (s) => s.status === 'done');
  expect(sources.hits('/slow.ndjson')).toBe(hitsBefore + 1);
  expect(await count(server, 'patient')).toBe(2000);
  expect(done.imported).toBe(2000);
  expect(done.inputs[0]).toMatchObject({ status: 'done', imported: 2000, linesRead: 2000, checkpoint: 2000, errorCount: 0 });
  const [row] = await server.sql`select count(*)::int as n from patient where id like 'slow-%' and resource->'name'->0->>'family' = 'Family' || substr(id, 6)`;
  expect(row!.n).toBe(2000);
  const [staging] = await server.sql`select count(*)::int as n from pg_class where relname like '\_fhirhose\_import\_%'`;
  expect(staging!.n).toBe(0);
});

/**
 * Bun.serve drops Content-Length from a streamed body (it answers chunked), and without a size
 * there is no progress to report: a sized, slow source comes from node:http instead.
 */
async function sizedSlowSource(body: string, bytesPerTick: number, holdAt: number): Promise<{ url: string; release: () => void; close: () => void }> {
  let held = true;
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': Buffer.byteLength(body) });
    let sent = 0;
    const tick = setInterval(() => {
      if (res.destroyed) return clearInterval(tick);
      if (held && sent >= holdAt) return; // nothing more until released
      res.write(body.slice(sent, sent + bytesPerTick));
      sent += bytesPerTick;
      if (sent >= body.length) {
        clearInterval(tick);
        res.end();
      }
    }, 20);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/progress.ndjson`, release: () => { held = false; }, close: () => server.closeAllConnections() };
}

test('progress: bytes, lines, rate, progress and an ETA while running; times and duration at the end', async () => {
  const body = patients(1500, 'prog');
  const source = await sizedSlowSource(body, 8000, Math.floor(body.length / 2)); // holds halfway until released
  await startImport(server, { id: 'progress', inputs: [{ type: 'Patient', url: source.url }] });
  const running = await waitFor(server, 'progress', (s) => s.inputs[0].checkpoint >= 300 && s.status === 'active');
  const input = running.inputs[0];
  expect(input.status).toBe('active');
  expect(input.bytesTotal).toBe(body.length);
  expect(input.bytesRead).toBeGreaterThan(0);
  expect(input.bytesRead).toBeLessThan(body.length);
  expect(input.linesRead).toBe(input.checkpoint);
  expect(typeof input.startedAt).toBe('string');
  expect(input.finishedAt).toBeUndefined();
  expect(running.progress).toBeGreaterThan(0);
  expect(running.progress).toBeLessThan(1);
  expect(running.rate).toBeGreaterThan(0);
  expect(running.etaSeconds).toBeGreaterThanOrEqual(0);
  expect(Date.parse(running.eta)).toBeGreaterThan(Date.now() - 1000);

  source.release();
  const done = await waitFor(server, 'progress', (s) => s.status === 'done');
  source.close();
  expect(done.progress).toBe(1);
  expect(done.eta).toBeUndefined();
  expect(done.inputs[0].bytesRead).toBe(body.length);
  expect(done.inputs[0].durationMs).toBeGreaterThan(0);
  expect(Date.parse(done.finishedAt)).toBeGreaterThanOrEqual(Date.parse(done.startedAt));
  expect(done.inputs[0].rate).toBeGreaterThan(0);
});

test('a source of unknown size (chunked) reports its size once read, and progress 1 when done', async () => {
  const body = patients(300, 'chunked');
  sources.set('/chunked.ndjson', body, { trickle: { bytes: 20000, everyMs: 5 } });
  await startImport(server, { id: 'chunked', inputs: [{ type: 'Patient', url: sources.url('/chunked.ndjson') }] });
  const done = await waitFor(server, 'chunked', (s) => s.status === 'done');
  expect(done.progress).toBe(1);
  expect(done.inputs[0].bytesTotal).toBe(body.length);
  expect(done.inputs[0].bytesRead).toBe(body.length);
});

test('bad lines are skipped and reported with their line numbers; the session still ends done', async () => {
  const lines = [
    JSON.stringify({ resourceType: 'Patient', id: 'ok-1' }),
    '{not json',
    JSON.stringify({ resourceType: 'Observation', id: 'wrong-type' }),
    '',
    JSON.stringify({ resourceType: 'Patient' }),
    JSON.stringify({ resourceType: 'Patient', id: 'ok-2' }),
  ];
  sources.set('/bad-lines.ndjson', lines.join('\n') + '\n');
  await startImport(server, { id: 'bad-lines', inputs: [{ type: 'Patient', url: sources.url('/bad-lines.ndjson') }] });
  const done = await waitFor(server, 'bad-lines', (s) => s.status !== 'active');
  expect(done.status).toBe('done');
  expect(done.inputs[0].imported).toBe(2);
  expect(done.inputs[0].errorCount).toBe(3);
  expect(done.inputs[0].errors.map((e: { line: number }) => e.line)).toEqual([2, 3, 5]);
  expect(done.inputs[0].errors[1].message).toContain('Observation');
  expect(done.inputs[0].errors[2].message).toContain('id');
});

test('several sessions run at the same time, each input in parallel', async () => {
  // each source holds after its first 100 lines, so both inputs of multi-1 are seen running at once
  for (const name of ['a', 'b', 'c']) {
    const body = patients(400, `multi-${name}`);
    sources.set(`/multi-${name}.ndjson`, body, { holdAfter: body.indexOf(`multi-${name}-101"`) });
  }
  await startImport(server, { id: 'multi-1', inputs: [{ type: 'Patient', url: sources.url('/multi-a.ndjson') }, { type: 'Patient', url: sources.url('/multi-b.ndjson') }] });
  await startImport(server, { id: 'multi-2', inputs: [{ type: 'Patient', url: sources.url('/multi-c.ndjson') }] });
  const seen = await waitFor(server, 'multi-1', (s) => s.inputs.every((i: { status: string }) => i.status === 'active'));
  expect(seen.inputs.length).toBe(2);
  expect((await status(server, 'multi-2')).status).toBe('active');
  for (const name of ['a', 'b', 'c']) sources.release(`/multi-${name}.ndjson`);
  await waitFor(server, 'multi-1', (s) => s.status === 'done');
  await waitFor(server, 'multi-2', (s) => s.status === 'done');
  const [row] = await server.sql`select count(*)::int as n from patient where id like 'multi-%'`;
  expect(row!.n).toBe(1200);
  const list = (await (await server.request('/BulkImportStatus')).json()) as Record<string, any>;
  expect(list.entry.map((e: { resource: { id: string } }) => e.resource.id)).toEqual(expect.arrayContaining(['multi-1', 'multi-2']));
});

test('update: true keeps the overwritten versions in history; without it, none are kept', async () => {
  sources.set('/v1.ndjson', patients(30, 'hist'));
  const v2 = patients(30, 'hist').replaceAll('"Given"', '"Changed"');
  sources.set('/v2.ndjson', v2);
  await startImport(server, { id: 'hist-1', inputs: [{ type: 'Patient', url: sources.url('/v1.ndjson') }] });
  await waitFor(server, 'hist-1', (s) => s.status === 'done');
  await startImport(server, { id: 'hist-2', update: false, inputs: [{ type: 'Patient', url: sources.url('/v1.ndjson') }] });
  await waitFor(server, 'hist-2', (s) => s.status === 'done');
  const [none] = await server.sql`select count(*)::int as n from patient_history where id like 'hist-%'`;
  expect(none!.n).toBe(0);
  await startImport(server, { id: 'hist-3', update: true, inputs: [{ type: 'Patient', url: sources.url('/v2.ndjson') }] });
  expect((await waitFor(server, 'hist-3', (s) => s.status === 'done')).update).toBe(true);
  const [kept] = await server.sql`select count(*)::int as n from patient_history where id like 'hist-%' and resource->'name'->0->'given'->>0 = 'Given'`;
  expect(kept!.n).toBe(30);
  const [now] = await server.sql`select count(*)::int as n from patient where id like 'hist-%' and resource->'name'->0->'given'->>0 = 'Changed'`;
  expect(now!.n).toBe(30);
});

test('ids already held in the middle of a batch, where the direct COPY\'s sample misses them, are upserted: nothing lost or doubled', async () => {
  // two held ids between the first and last four of the batch: the direct COPY fails with 23505
  // and the batch goes through staging and the merge
  await server.sql`insert into patient (id, txid, status, resource) values ('mid-10', 1, 'created', '{"name":[{"family":"Old"}]}'), ('mid-20', 1, 'created', '{}')`;
  sources.set('/mid.ndjson', patients(30, 'mid'));
  await startImport(server, { id: 'mid-1', update: true, inputs: [{ type: 'Patient', url: sources.url('/mid.ndjson') }] });
  const done = await waitFor(server, 'mid-1', (s) => s.status === 'done');
  expect(done.inputs[0]).toMatchObject({ imported: 30, errorCount: 0 });
  const rows = await server.sql`select id, resource->'name'->0->>'family' as family from patient where id like 'mid-%' order by id`;
  expect(rows.length).toBe(30);
  expect(rows.find((r) => r.id === 'mid-10')!.family).toBe('Family10');
  const history = await server.sql`select id from patient_history where id like 'mid-%' order by id`;
  expect(history.map((r) => r.id)).toEqual(['mid-10', 'mid-20']);
  // the same lines again: every id held, all 30 updated
  await startImport(server, { id: 'mid-2', update: true, inputs: [{ type: 'Patient', url: sources.url('/mid.ndjson') }] });
  expect((await waitFor(server, 'mid-2', (s) => s.status === 'done')).inputs[0]).toMatchObject({ imported: 30 });
  const [again] = await server.sql`select count(*)::int as n from patient_history where id like 'mid-%'`;
  expect(again!.n).toBe(32);
});

test('an input without a type takes each line\'s own resourceType', async () => {
  const mixed = [
    { resourceType: 'Patient', id: 'mixed-p' },
    { resourceType: 'Observation', id: 'mixed-o', status: 'final', code: { text: 'x' } },
    { id: 'mixed-none' },
  ].map((r) => JSON.stringify(r)).join('\n');
  sources.set('/mixed.ndjson', mixed);
  await startImport(server, { id: 'mixed', inputs: [{ url: sources.url('/mixed.ndjson') }] });
  const done = await waitFor(server, 'mixed', (s) => s.status === 'done');
  expect(done.inputs[0].type).toBeUndefined();
  expect(done.inputs[0]).toMatchObject({ imported: 2, errorCount: 1 });
  expect(done.inputs[0].errors[0]).toMatchObject({ line: 3 });
  expect(await count(server, 'observation')).toBeGreaterThanOrEqual(1);
});
