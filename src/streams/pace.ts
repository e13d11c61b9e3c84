/**
 * The pace of a remote source (SPEC §10: sources time out). A source that sends nothing for the
 * stall timeout, or less than the minimum rate over a window, errors the stream, so the `$load`
 * ends or the `$import` input goes to `error` instead of holding a connection for ever.
 *
 * Only the time spent waiting for the source counts: while the database is busy the stream is not
 * pulled, and the bytes that arrived meanwhile are read at once afterwards, so a slow database
 * never makes a source look slow.
 */
import { OperationOutcomeError } from '../fhir/outcome.ts';

export interface PaceLimits {
  stallTimeoutMs: number;
  /** Bytes per second over each window of waiting time; 0 turns the check off. */
  minRate: number;
  rateWindowMs: number;
}

/**
 * Passes `input` through; errors with OperationOutcomeError('timeout', describe(…)) when one read
 * waits longer than the stall timeout, or the bytes read over a window of waiting time fall below
 * the minimum rate; `input` is then cancelled, unless `cancelOnFail` is false.
 *
 * `cancelOnFail: false` is for a request body (uploads): nothing needs stopping there (the client
 * sends at its own pace and the server drops the rest of the body with the request), and in Bun
 * cancelling a request body while a read of it is pending may never settle: awaited, it left a
 * stalled upload unanswered in full-suite CI runs; not awaited, the stalled upload still went
 * unanswered, and the next server start timed out, in a full run beside two CPU burners. The
 * pending read is left to end with the connection.
 */
export function watchPace(
  input: ReadableStream<Uint8Array>,
  limits: PaceLimits,
  describe: (what: string) => string,
  options: { cancelOnFail?: boolean } = {},
): ReadableStream<Uint8Array> {
  const reader = input.getReader();
  const cancelOnFail = options.cancelOnFail ?? true;
  let waitedMs = 0;
  let windowBytes = 0;
  let reading = false;
  // Not awaited: the timeout answers at once, whatever the source does with the cancel.
  const fail = async (what: string) => {
    if (cancelOnFail) reader.cancel(what).catch(() => {});
    return new OperationOutcomeError('timeout', describe(what));
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const started = performance.now();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const stalled = new Promise<'stalled'>((resolve) => {
          timer = setTimeout(() => resolve('stalled'), limits.stallTimeoutMs);
        });
        let result: Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>['read']>> | 'stalled';
        try {
          reading = true;
          result = await Promise.race([reader.read().finally(() => { reading = false; }), stalled]);
        } finally {
          clearTimeout(timer);
        }
        if (result === 'stalled') {
          throw await fail(`sent no bytes for ${seconds(limits.stallTimeoutMs)} s (FHIRHOSE_SOURCE_STALL_TIMEOUT)`);
        }
        if (result.done) return controller.close();
        waitedMs += performance.now() - started;
        windowBytes += result.value.length;
        if (limits.minRate > 0 && waitedMs >= limits.rateWindowMs) {
          const rate = windowBytes / (waitedMs / 1000);
          if (rate < limits.minRate) {
            throw await fail(
              `sent ${Math.round(rate)} bytes/s over ${seconds(waitedMs)} s, below the minimum of ${limits.minRate} bytes/s (FHIRHOSE_SOURCE_MIN_RATE)`,
            );
          }
          waitedMs = 0;
          windowBytes = 0;
        }
        controller.enqueue(result.value);
      },
      cancel(reason) {
        // with a read pending (cut while waiting), the cancel may never settle: not awaited then
        const cancelled = reader.cancel(reason);
        if (!reading) return cancelled;
        cancelled.catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}

function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
