/**
 * Progress that tells the truth (SPEC §8, issue 9): sizes asked up front, bytes reported as they are
 * read (not only when a batch commits), `progress` that never goes back, an ETA close to the real
 * end for a source read at a known pace, and inputs that show what happened after a session error.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { patients, startImport, startSourceServer, status, waitFor, type SourceServer } from '../helpers/import-sources.ts';

let server: TestServer;
let sources: SourceServer;

beforeAll(async () => {
  // Batches far larger than the sources: nothing commits before the end, so every step of
  // progress seen before that comes from the bytes reported while reading.
  server = await startTestServer({ FHIRHOSE_IMPORT_BATCH_LINES: '1000000' });
  sources = startSourceServer();
});
afterAll(async () => {
  await server.stop();
  await sources.stop();
});

interface Sample { at: number; progress: number; eta?: number; bytes: number[]; imported: number; status: string; inputs: string[] }

/** Polls the session until it is no longer active, keeping what each answer said. */
async function watch(id: string, timeoutMs = 60_000): Promise<{ samples: Sample[]; end: number }> {
  const samples: Sample[] = [];
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const s = await status(server, id);
    const at = performance.now();
    samples.push({ at, progress: s.progress, eta: s.etaSeconds, bytes: s.inputs.map((i: { bytesRead: number }) => i.bytesRead), imported: s.imported, status: s.status, inputs: s.inputs.map((i: { status: string }) => i.status) });
    if (s.status !== 'active') return { samples, end: at };
    await Bun.sleep(100);
  }
  throw new Error(`session ${id} still active after ${timeoutMs} ms`);
}

function neverDecreases(values: number[]): void {
  for (let i = 1; i < values.length; i++) expect({ i, step: values[i]! >= values[i - 1]! }).toEqual({ i, step: true });
}

test('two inputs read at a known pace: sizes known at start, bytes reported while reading, progress monotone, ETA close', async () => {
  // 2 × ~330 KB at 40 KB/s each, in parallel: about 8 s.
  const body = (prefix: string) => patients(2500, prefix);
  sources.set('/pace-a.ndjson', body('pace-a'), { trickle: { bytes: 4096, everyMs: 100 } });
  sources.set('/pace-b.ndjson', body('pace-b'), { trickle: { bytes: 4096, everyMs: 100 } });
  const started = performance.now();
  const res = await startImport(server, { id: 'pace', inputs: [{ type: 'Patient', url: sources.url('/pace-a.ndjson') }, { type: 'Patient', url: sources.url('/pace-b.ndjson') }] });
  expect(res.status).toBe(201);
  const first = (await res.json()) as Record<string, any>;
  expect(first.inputs.map((i: { bytesTotal: number }) => i.bytesTotal)).toEqual([body('pace-a').length, body('pace-b').length]);

  const { samples, end } = await watch('pace');
  expect(samples.at(-1)!.status).toBe('done');
  expect(samples.at(-1)!.progress).toBe(1);
  neverDecreases(samples.map((s) => s.progress));
  for (const input of [0, 1]) neverDecreases(samples.map((s) => s.bytes[input]!));
  // Bytes were seen growing while nothing was committed yet.
  const reading = samples.filter((s) => s.status === 'active' && s.imported === 0 && s.bytes[0]! > 0);
  expect(reading.length).toBeGreaterThan(3);
  expect(new Set(reading.map((s) => s.bytes[0])).size).toBeGreaterThan(2);

  // Half-way, the predicted end is within 30 % of the whole duration (+1 s) of the real one.
  const total = (end - started) / 1000;
  const middle = samples.filter((s) => s.progress >= 0.3 && s.progress <= 0.7 && s.eta !== undefined);
  expect(middle.length).toBeGreaterThan(3);
  for (const s of middle) {
    const predictedEnd = (s.at - started) / 1000 + s.eta!;
    expect({ progress: s.progress, off: Math.abs(predictedEnd - total) <= 0.3 * total + 1 }).toEqual({ progress: s.progress, off: true });
  }
}, 90_000);

test('an input of unknown size: every input weighs the same, progress still never goes back', async () => {
  sources.set('/sized.ndjson', patients(300, 'sized'), { trickle: { bytes: 8192, everyMs: 50 } });
  sources.set('/unsized.ndjson', patients(1200, 'unsized'), { trickle: { bytes: 8192, everyMs: 50 }, unsized: true });
  const res = await startImport(server, { id: 'unsized', inputs: [{ type: 'Patient', url: sources.url('/sized.ndjson') }, { type: 'Patient', url: sources.url('/unsized.ndjson') }] });
  const first = (await res.json()) as Record<string, any>;
  expect(first.inputs[0].bytesTotal).toBe(patients(300, 'sized').length);
  expect(first.inputs[1].bytesTotal).toBeUndefined();
  const { samples } = await watch('unsized');
  expect(samples.at(-1)!.status).toBe('done');
  neverDecreases(samples.map((s) => s.progress));
  // The unsized input counts nothing until done, so the session never claims more than the sized half.
  for (const s of samples.filter((x) => x.inputs[1] !== 'done')) expect(s.progress).toBeLessThanOrEqual(0.5);
  // 1 only once the session is done.
  for (const s of samples.filter((x) => x.status !== 'done')) expect(s.progress).toBeLessThan(1);
  expect((await status(server, 'unsized')).inputs[1].bytesTotal).toBe(patients(1200, 'unsized').length);
}, 60_000);

test('after a session error, an input that was running shows stopped, why, and a clock that stopped', async () => {
  sources.set('/slow-ok.ndjson', patients(3000, 'slow-ok'), { trickle: { bytes: 4096, everyMs: 100 } });
  sources.set('/fails.ndjson', patients(3000, 'fails'), { trickle: { bytes: 4096, everyMs: 100 }, dropAfter: 20_000 });
  await startImport(server, { id: 'halted', inputs: [{ type: 'Patient', url: sources.url('/slow-ok.ndjson') }, { type: 'Patient', url: sources.url('/fails.ndjson') }] });
  const failed = await waitFor(server, 'halted', (s) => s.status !== 'active', 30_000);
  expect(failed.status).toBe('error');
  expect(failed.inputs[0]).toMatchObject({ status: 'stopped', message: 'stopped when inputs[1] failed' });
  expect(failed.inputs[0].finishedAt).toBeDefined();
  expect(failed.inputs[1]).toMatchObject({ status: 'error' });
  // The durations are fixed once the session stopped: read again after the clock moved on.
  await Bun.sleep(300);
  const later = await status(server, 'halted');
  expect(later.inputs.map((i: { durationMs: number }) => i.durationMs)).toEqual(failed.inputs.map((i: { durationMs: number }) => i.durationMs));
  expect(later.durationMs).toBe(failed.durationMs);
  // force-resume runs the stopped input on.
  sources.set('/fails.ndjson', patients(3000, 'fails'));
  sources.set('/slow-ok.ndjson', patients(3000, 'slow-ok'));
  const res = await server.request('/$import', { method: 'POST', json: { id: 'halted', action: 'force-resume' } });
  expect(res.status).toBe(200);
  const done = await waitFor(server, 'halted', (s) => s.status !== 'active', 30_000);
  expect(done.status).toBe('done');
  expect(done.inputs.map((i: { status: string; imported: number }) => [i.status, i.imported])).toEqual([['done', 3000], ['done', 3000]]);
}, 60_000);
