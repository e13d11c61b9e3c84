import { expect, test } from 'bun:test';
import { OperationOutcomeError } from '../../src/fhir/outcome.ts';
import { watchPace } from '../../src/streams/pace.ts';

/** A source that gives `chunks` chunks of `size` bytes, each after `delayMs`. */
function source(chunks: number, size: number, delayMs: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent === chunks) return controller.close();
      if (delayMs > 0) await Bun.sleep(delayMs);
      sent++;
      controller.enqueue(new Uint8Array(size));
    },
  }, { highWaterMark: 0 });
}

async function drain(stream: ReadableStream<Uint8Array>, pauseMs = 0): Promise<number> {
  let bytes = 0;
  for await (const chunk of stream) {
    bytes += chunk.length;
    if (pauseMs > 0) await Bun.sleep(pauseMs);
  }
  return bytes;
}

const describe = (what: string) => `Cannot load "x": ${what}`;

test('a source that stops sending errors the stream after the stall timeout and is cancelled', async () => {
  let cancelled = false;
  const stalled = new ReadableStream<Uint8Array>({
    start(controller) { controller.enqueue(new Uint8Array(10)); },
    cancel() { cancelled = true; },
  });
  const error = await drain(watchPace(stalled, { stallTimeoutMs: 200, minRate: 0, rateWindowMs: 1000 }, describe)).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(OperationOutcomeError);
  expect((error as OperationOutcomeError).code).toBe('timeout');
  expect((error as OperationOutcomeError).message).toBe('Cannot load "x": sent no bytes for 0.2 s (FHIRHOSE_SOURCE_STALL_TIMEOUT)');
  expect(cancelled).toBe(true);
});

test('a source below the minimum rate over the window errors the stream', async () => {
  // 100 bytes every 50 ms: 2,000 bytes/s, under a minimum of 10,000.
  const error = await drain(watchPace(source(100, 100, 50), { stallTimeoutMs: 5000, minRate: 10_000, rateWindowMs: 500 }, describe)).catch((e: unknown) => e);
  expect((error as OperationOutcomeError).message).toMatch(/^Cannot load "x": sent \d+ bytes\/s over 0\.\d s, below the minimum of 10000 bytes\/s \(FHIRHOSE_SOURCE_MIN_RATE\)$/);
});

test('a slow reader never makes a fast source look slow: only the time spent waiting for it counts', async () => {
  // The source has each chunk of 50 KB ready at once, so the pace waits for it only a moment; the
  // reader then takes 1 s per chunk (the database, say). Counted in wall time that is 50 KB/s,
  // below the minimum of 60 KB/s; counted as waiting time it is far above, even if a loaded machine
  // stalls one wait for most of a second (a timed source measured its own timers: 10 ms sleeps
  // became 180 ms, and the test failed on them).
  const bytes = await drain(watchPace(source(4, 50_000, 0), { stallTimeoutMs: 5000, minRate: 60_000, rateWindowMs: 100 }, describe), 1000);
  expect(bytes).toBe(200_000);
});

test('with cancelOnFail false (a request body) a stall errors the stream at once and leaves the pending read alone', async () => {
  let cancelled = false;
  let pulls = 0;
  // a source whose read never settles and whose cancel never settles either (what a stalled request body may do)
  const stalled = new ReadableStream<Uint8Array>({
    start(controller) { controller.enqueue(new Uint8Array(10)); },
    pull() { pulls++; return new Promise<void>(() => {}); },
    cancel() { cancelled = true; return new Promise<void>(() => {}); },
  }, { highWaterMark: 0 });
  const paced = watchPace(stalled, { stallTimeoutMs: 200, minRate: 0, rateWindowMs: 1000 }, describe, { cancelOnFail: false });
  const error = await drain(paced).catch((e: unknown) => e);
  expect((error as OperationOutcomeError).code).toBe('timeout');
  expect(pulls).toBe(1);
  expect(cancelled).toBe(false);
});

test('a cancel from downstream while a read is pending returns at once, even if the source never settles it', async () => {
  let cancelled = false;
  const stuck = new ReadableStream<Uint8Array>({
    pull() { return new Promise<void>(() => {}); },
    cancel() { cancelled = true; return new Promise<void>(() => {}); },
  }, { highWaterMark: 0 });
  const reader = watchPace(stuck, { stallTimeoutMs: 60_000, minRate: 0, rateWindowMs: 1000 }, describe).getReader();
  const read = reader.read();
  await Bun.sleep(0);
  // bounded: a cancel that waited for the source would never return
  const outcome = await Promise.race([reader.cancel('client gone').then(() => 'returned'), Bun.sleep(5000).then(() => 'hung')]);
  expect(outcome).toBe('returned');
  expect(cancelled).toBe(true);
  expect(await read).toEqual({ done: true, value: undefined });
});
