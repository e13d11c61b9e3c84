/**
 * A response body that ends a reader slower than a minimum rate (SPEC §10 "slow readers"). The
 * rate is measured over the time the stream waits for its reader (from handing out a chunk to
 * the next pull), never over the time it waits for its source: a query still computing its first
 * rows is not the client's fault. Once that waiting time reaches `windowMs` and fewer than
 * `bytesPerSec × window` bytes were taken in it, the source is cancelled (its connection goes
 * back to the pool) and the stream errors, which makes Bun close the connection at once, even
 * while it waits for the socket to drain (checked with a reader at 1 KB/s).
 *
 * `onEnd` is called once, when the stream ends, fails, is cancelled or is cut.
 */
export interface SlowReaderOptions {
  /** 0 turns the check off. */
  bytesPerSec: number;
  windowMs: number;
  /** Called with the reason when the reader is cut. */
  onSlow?(message: string): void;
  onEnd?(): void;
  /** Awaited (when it returns a promise) before each read of the source: see http/priority.ts. */
  beforeRead?(): Promise<void> | undefined;
}

export function guardSlowReader(source: ReadableStream<Uint8Array>, options: SlowReaderOptions): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let ended = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const end = () => {
    if (ended) return;
    ended = true;
    if (timer) clearInterval(timer);
    options.onEnd?.();
  };
  // reader-waiting time and bytes taken in the current window
  let waitingSince: number | undefined;
  let waitedMs = 0;
  let bytes = 0;
  let controller!: ReadableStreamDefaultController<Uint8Array>;

  const check = () => {
    const now = performance.now();
    const waited = waitedMs + (waitingSince === undefined ? 0 : now - waitingSince);
    if (waited < options.windowMs) return;
    const rate = (bytes * 1000) / waited;
    if (rate < options.bytesPerSec) {
      const message = `The client read ${Math.round(rate)} bytes/s over ${Math.round(waited / 1000)} s, below the minimum of ${options.bytesPerSec} (FHIRHOSE_SLOW_READER_BYTES_PER_SEC over FHIRHOSE_SLOW_READER_WINDOW_MS); the response was cut`;
      options.onSlow?.(message);
      end();
      reader.cancel(new Error(message)).catch(() => {});
      controller.error(new Error(message));
      return;
    }
    waitedMs = 0;
    bytes = 0;
    if (waitingSince !== undefined) waitingSince = now;
  };

  return new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        if (options.bytesPerSec > 0) timer = setInterval(check, Math.max(50, Math.min(1000, options.windowMs / 4)));
      },
      async pull(c) {
        if (waitingSince !== undefined) waitedMs += performance.now() - waitingSince;
        waitingSince = undefined;
        let next: Awaited<ReturnType<typeof reader.read>>;
        const turn = options.beforeRead?.();
        if (turn) await turn;
        if (ended) return; // cut while waiting for its turn
        try {
          next = await reader.read();
        } catch (err) {
          end();
          throw err;
        }
        if (ended && !next.done) return; // cut while the source was answering
        if (next.done) {
          end();
          return c.close();
        }
        bytes += next.value.byteLength;
        c.enqueue(next.value);
        waitingSince = performance.now();
      },
      cancel(reason) {
        end();
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
