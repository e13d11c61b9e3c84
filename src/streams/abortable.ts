/**
 * A stream that errors as soon as `signal` aborts, even while a read of its source is pending.
 *
 * Why: a client that disconnects in the middle of an upload (or of a `$load` whose source is a
 * file) must end the load's COPY at once. Cancelling the backend is not enough: PostgreSQL does not
 * act on a cancel while COPY FROM STDIN waits for data (ProcessClientReadInterrupt only handles
 * interrupts while reading a command), and Bun may leave the read of a cut request body pending.
 * So the abort errors the stream the COPY is fed from; the COPY then fails on our side (CopyFail)
 * and the transaction rolls back (tests/operations/upload.test.ts, load-errors.test.ts).
 */
export function abortable(stream: ReadableStream<Uint8Array>, signal: AbortSignal | undefined): ReadableStream<Uint8Array> {
  if (!signal) return stream;
  const reader = stream.getReader();
  let ended = false;
  let onAbort = () => {};
  const end = () => {
    ended = true;
    signal.removeEventListener('abort', onAbort);
  };
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        onAbort = () => {
          if (ended) return;
          end();
          controller.error(signal.reason);
          reader.cancel(signal.reason).catch(() => {});
        };
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      },
      async pull(controller) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (!ended) {
            end();
            controller.error(err);
          }
          return;
        }
        if (ended) return; // aborted while the read was pending: the stream has errored already
        if (chunk.done) {
          end();
          controller.close();
        } else {
          controller.enqueue(chunk.value);
        }
      },
      cancel(reason) {
        end();
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
