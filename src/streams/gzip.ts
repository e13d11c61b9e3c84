import zlib from 'node:zlib';
import { OperationOutcomeError } from '../fhir/outcome.ts';

// The gzip module (STYLE rules 7 and 13): the only user of Bun's zlib streams.
//
// Native streams, not fflate (which SPEC §7 names), because in Bun fflate is 3x (gzip) to 12x
// (gunzip) slower, and so fflate is not a dependency. Measured
// with Bun 1.4.5 on a 2-core VM, a 50.5 MB gzip (gzip -6) of 515 MB Synthea ndjson read from a file:
//   gunzip: fflate Gunzip 38–58 MB/s (gunzipSync on the whole buffer: 66 MB/s);
//           native DecompressionStream 654–980 MB/s of output (gunzipIfNeeded around it: 649–806).
//   gzip:   fflate Gzip level 6: 62 MB/s, level 1: 76 MB/s (60.6 MB out);
//           native CompressionStream 189 MB/s of input (51.0 MB out).
// DecompressionStream also handles multi-member gzip, checks CRC32 and length, and rejects
// truncation (even inside the trailer) and trailing garbage; it reads its input only as its output
// is consumed.

/** Bounds on what a source may expand to (SPEC §10: decompression is bounded). */
export interface ExpansionLimits {
  /** Bytes of output (decompressed, or plain) at most. */
  maxBytes: number;
  /** Output bytes per input byte at most, checked once the output passes RATIO_FLOOR. */
  maxRatio: number;
}

/**
 * The ratio is judged only past this much output: a small file may compress very well (a few
 * repeated lines), and a bomb is refused after staging at most this much. Real ndjson compresses
 * 5–20× (Synthea: 515 MB → 50.5 MB, above), far from the default bound of 200×.
 */
export const RATIO_FLOOR = 1024 * 1024;

/**
 * Passes `input` through unchanged unless it starts with the gzip magic bytes 1f 8b, in which case
 * it is decompressed (multi-member gzip included). Pull-based. A truncated or corrupt gzip errors
 * the stream with OperationOutcomeError('unprocessable', 'gzip data is truncated …' / '… corrupt …');
 * errors of `input` itself pass through unchanged. With `limits`, output past `maxBytes` errors
 * the stream with 'too-large', and a gzip expanding more than `maxRatio` times with
 * 'unprocessable' (a probable gzip bomb); `input` is cancelled then.
 */
export function gunzipIfNeeded(input: ReadableStream<Uint8Array>, limits?: ExpansionLimits): ReadableStream<Uint8Array> {
  const reader = input.getReader();
  const failed: { error?: unknown } = {};
  const counted = { input: 0, output: 0 };
  let output: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let gzipped = false;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (output === undefined) {
          const head = await sniff(reader);
          gzipped = head[0] === 0x1f && head[1] === 0x8b;
          const rest = prepend(head, reader, failed, counted);
          output = (gzipped ? rest.pipeThrough(bytes(new DecompressionStream('gzip'))) : rest).getReader();
        }
        let chunk: Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>['read']>>;
        try {
          chunk = await output.read();
        } catch (error) {
          if (!gzipped || ('error' in failed && error === failed.error)) throw error;
          throw gzipError(error);
        }
        if (chunk.done) return controller.close();
        counted.output += chunk.value.length;
        if (limits !== undefined) {
          const refusal = overLimits(counted, limits, gzipped);
          if (refusal !== undefined) {
            await output.cancel(refusal.message).catch(() => {});
            throw refusal;
          }
        }
        controller.enqueue(chunk.value);
      },
      cancel(reason) {
        return output === undefined ? reader.cancel(reason) : output.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/**
 * Gzip-compresses `input` with Bun's native CompressionStream (zlib's default level), pulling it
 * as the output is consumed.
 */
export function gzipStream(input: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  return input.pipeThrough(bytes(new CompressionStream('gzip')));
}

/** Reads until at least two bytes (the gzip magic) are known, or the input ends. */
async function sniff(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<Uint8Array> {
  let head: Uint8Array = new Uint8Array(0);
  while (head.length < 2) {
    const { done, value } = await reader.read();
    if (done) break;
    if (head.length === 0) {
      head = value;
    } else {
      const joined = new Uint8Array(head.length + value.length);
      joined.set(head);
      joined.set(value, head.length);
      head = joined;
    }
  }
  return head;
}

function overLimits(counted: { input: number; output: number }, limits: ExpansionLimits, gzipped: boolean): OperationOutcomeError | undefined {
  if (counted.output > limits.maxBytes) {
    return new OperationOutcomeError(
      'too-large',
      `the source expands to more than ${limits.maxBytes} bytes of ndjson (FHIRHOSE_MAX_SOURCE_BYTES)`,
    );
  }
  if (gzipped && counted.output > RATIO_FLOOR && counted.output > limits.maxRatio * counted.input) {
    return new OperationOutcomeError(
      'unprocessable',
      `the gzip expands more than ${limits.maxRatio} times (${counted.output} bytes from ${counted.input}), ` +
        'refused as a probable gzip bomb (FHIRHOSE_MAX_COMPRESSION_RATIO)',
    );
  }
  return undefined;
}

/**
 * `head` then the rest of `reader`, remembering the input's own error to tell it from zlib's, and
 * counting the bytes handed on. Chunks are handed on in slices of at most SLICE bytes: the
 * decompressor reads ahead by a chunk or two, and the ratio bound must not be blurred by 64 KiB
 * of compressed input it has not expanded yet (that is 13 MB of output at 200×).
 */
function prepend(
  head: Uint8Array,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  failed: { error?: unknown },
  counted: { input: number },
): ReadableStream<Uint8Array> {
  let pending: Uint8Array | undefined = head.length > 0 ? head : undefined;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (pending === undefined) {
          try {
            const { done, value } = await reader.read();
            if (done) return controller.close();
            pending = value;
          } catch (error) {
            failed.error = error;
            throw error;
          }
        }
        const slice = pending.length > SLICE ? pending.subarray(0, SLICE) : pending;
        pending = pending.length > SLICE ? pending.subarray(SLICE) : undefined;
        counted.input += slice.length;
        controller.enqueue(slice);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

const SLICE = 16 * 1024;

/** lib.dom types zlib streams for ArrayBuffer-backed chunks only; ours may come from any buffer. */
function bytes(transform: CompressionStream | DecompressionStream): ReadableWritablePair<Uint8Array, Uint8Array> {
  return { readable: transform.readable, writable: transform.writable as WritableStream<Uint8Array> };
}

function gzipError(error: unknown): OperationOutcomeError {
  const reason = error instanceof Error ? error.message : String(error);
  const message = /end of (file|stream)|truncat/i.test(reason)
    ? 'gzip data is truncated (it ends mid-stream)'
    : `gzip data is corrupt (${reason})`;
  return new OperationOutcomeError('unprocessable', message, { cause: error });
}

export interface GzipWriter {
  /** Compresses `chunk`; resolves when the compressor can take more (backpressure). */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * As `write`, for bytes nobody writes over afterwards (the `$dump` line writer's chunks): one of
   * OWNED_MIN or more goes to zlib as it is, without the copy into a block.
   */
  writeOwned(chunk: Uint8Array): Promise<void>;
  /** Flushes the gzip trailer; resolves once `sink` has had every byte. */
  close(): Promise<void>;
}

/**
 * Input is handed to the compressor in blocks of this size, and it hands its output back in
 * chunks of OUTPUT_CHUNK: each call into node:zlib crosses to its thread and back, and with the
 * `$dump` line writer's ~64 KiB chunks and zlib's 16 KiB default output, that crossing cost as
 * much as the compression itself. Measured in Bun 1.4.5 on 258 MB of the bench's Synthea mix at
 * level 1 (scripts/bench/probe-files.ts): 64 KiB in / 16 KiB out 1.8–2.0 s, 1 MiB in / 256 KiB
 * out 0.9–1.1 s, one `gzipSync` of the whole 0.9–1.6 s.
 */
const INPUT_BLOCK = 1024 * 1024;
const OUTPUT_CHUNK = 256 * 1024;
/**
 * An owned chunk this big is compressed as it is: copying 148 MB into blocks took about a tenth
 * of the `$export` file writer's main-thread time (BENCHMARKS.md, change 6), and zlib's cost per
 * call is small from 256 KiB in.
 */
const OWNED_MIN = 256 * 1024;

/**
 * Push-side gzip for files the server writes itself (`$export`): compressed bytes go to `sink` in
 * order, one `sink` call at a time. node:zlib at level 1, because on the export path compression
 * is the biggest cost after PostgreSQL's: measured in Bun 1.4.5 on 31 MB of Synthea ndjson in
 * 256 KiB chunks, CompressionStream (level 6) 170–178 ms, node:zlib level 6 104–114 ms, level 1
 * 45–57 ms for a file 1.6× bigger. Written bytes are copied into a block of INPUT_BLOCK first
 * (the caller may reuse its buffer once `write` resolves); memory stays at one block and the
 * compressor's window per writer.
 */
export function gzipWriter(sink: (chunk: Uint8Array) => Promise<void>, level = 1): GzipWriter {
  const gzip = zlib.createGzip({ level, chunkSize: OUTPUT_CHUNK });
  let failure: unknown;
  let pending = Promise.resolve();
  let block = Buffer.allocUnsafe(INPUT_BLOCK);
  let filled = 0;
  gzip.on('data', (chunk: Buffer) => {
    gzip.pause();
    pending = pending.then(() => sink(chunk)).then(() => { gzip.resume(); }, (err) => { failure ??= err; gzip.destroy(err as Error); });
  });
  const ended = new Promise<void>((resolve, reject) => {
    gzip.once('end', () => resolve(pending));
    gzip.once('error', (err) => reject(failure ?? err));
  });
  ended.catch(() => {});
  async function give(bytes: Uint8Array): Promise<void> {
    if (!gzip.write(bytes)) await Promise.race([new Promise((r) => gzip.once('drain', r)), ended]);
  }
  async function flush(): Promise<void> {
    if (filled === 0) return;
    const full = block.subarray(0, filled);
    // zlib keeps the buffer until it has read it: a fresh block for the next bytes
    block = Buffer.allocUnsafe(INPUT_BLOCK);
    filled = 0;
    await give(full);
  }
  const writer: GzipWriter = {
    async writeOwned(chunk) {
      if (chunk.length < OWNED_MIN) return writer.write(chunk);
      if (failure !== undefined) throw failure;
      await flush();
      if (failure !== undefined) throw failure;
      await give(chunk);
      if (failure !== undefined) throw failure;
    },
    async write(chunk) {
      if (failure !== undefined) throw failure;
      let from = 0;
      while (from < chunk.length) {
        const n = Math.min(chunk.length - from, INPUT_BLOCK - filled);
        block.set(chunk.subarray(from, from + n), filled);
        filled += n;
        from += n;
        if (filled === INPUT_BLOCK) await flush();
        if (failure !== undefined) throw failure;
      }
    },
    async close() {
      if (failure !== undefined) throw failure;
      await flush();
      gzip.end();
      await ended;
      await pending;
      if (failure !== undefined) throw failure;
    },
  };
  return writer;
}
