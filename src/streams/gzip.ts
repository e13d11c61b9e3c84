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
 * `input` as one gzip member, made as the output is pulled: the `$dump` response of a client that
 * accepts gzip, as nearly every HTTP client does by default. It is gzipWriter's (level 1, stored
 * blocks for what does not compress), for the reasons given there. The CompressionStream of
 * before (zlib's level 6) took 2.8–5.6× its CPU for a body 1.4–1.6× smaller: 1.1 against 0.4 s
 * for 258 MB of the Synthea mix, 1.8 against 0.33 s for 204 MB with attachments (BENCHMARKS.md).
 * Each chunk of `input` must stay as it is once read (the `$dump` line writer never writes over
 * what it handed out): big ones are compressed without a copy.
 */
export function gzipStream(input: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const reader = input.getReader();
  let out!: ReadableStreamDefaultController<Uint8Array>;
  let given = 0;
  // the reader keeps a chunk past this call: one the writer uses again is copied
  const writer = gzipWriter(async (bytes, reused) => {
    out.enqueue(reused ? new Uint8Array(bytes) : bytes);
    given++;
  });
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        out = controller;
      },
      async pull() {
        const before = given;
        try {
          while (given === before) {
            const { done, value } = await reader.read();
            if (done) {
              await writer.close();
              return out.close();
            }
            await writer.writeOwned(value);
          }
        } catch (err) {
          writer.abort();
          await reader.cancel(err).catch(() => {});
          throw err;
        }
      },
      async cancel(reason) {
        writer.abort();
        await reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
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
  /** Gives up: the compressor is closed, `sink` gets nothing more, and every later call fails. */
  abort(): void;
  /** Bytes of input written as stored (uncompressed) deflate blocks so far: see STORE_ABOVE. */
  readonly stored: number;
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
 * Where level 1 shrinks the last JUDGE_BYTES by less than 5 %, the writer stores what follows
 * (deflate's uncompressed blocks, in the same member) instead of compressing it: bytes that were
 * compressed already, such as a PDF or a JPEG as base64 in an attachment. Measured in Bun 1.4.5
 * (zlib-ng) on 1 MiB blocks: level 1 spends 14–17 ms per MB of base64 of random or gzipped bytes
 * and saves 0.1–1 %; storing costs 1.4 ms per MB. (Synthea ndjson comes out at 5–20 % of its
 * size. zlib's own `params()`, which would switch the level in place, changes nothing in Bun
 * 1.4.5.) The judged output lags by what zlib holds, which errs towards compressing.
 */
const STORE_ABOVE = 0.95;
const JUDGE_BYTES = 2 * INPUT_BLOCK;
/**
 * While storing, it compresses again once a block's samples (SAMPLES of SAMPLE_BYTES, spread over
 * it) come out of level 1 under SAMPLED_BELOW (ndjson: 0.17–0.26; base64 of random bytes: 0.99–1),
 * or after RETRY_AFTER bytes whatever they look like: a 4 KiB sample may not show what level 1
 * finds in a whole block (base64 of bytes that are random but not evenly spread: 0.99 against 0.77).
 * Each such retry that finds the bytes still incompressible doubles the interval, up to RETRY_MAX:
 * a retry compresses JUDGE_BYTES (~30 ms at 14–17 ms per MB), storing 16 MiB costs ~22 ms, so at a
 * fixed 16 MiB the retries cost more than the storing they judge.
 */
const SAMPLES = 4;
const SAMPLE_BYTES = 4096;
const SAMPLED_BELOW = 0.8;
const RETRY_AFTER = 16 * INPUT_BLOCK;
const RETRY_MAX = 128 * INPUT_BLOCK;
/** Output handed to `sink` and not yet written, at most (then `write` waits). */
const QUEUE_MAX = 2 * INPUT_BLOCK;
/** ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=3 (Unix), as zlib writes it. */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
/** A last stored block of no bytes: BFINAL=1 BTYPE=00, LEN=0, NLEN=0xffff. */
const FINAL_EMPTY_BLOCK = Buffer.from([1, 0, 0, 0xff, 0xff]);
const STORED_MAX = 0xffff;
/** Input bytes per piece of stored blocks handed to the sink: 16 blocks, about 1 MiB. */
const STORED_PIECE = 16 * STORED_MAX;
const WINDOW = 32 * 1024;

/**
 * Push-side gzip for files the server writes itself (`$export`) and for gzipStream: compressed
 * bytes go to `sink` in order, one `sink` call at a time, as one gzip member. A chunk with `reused`
 * true is the sink's only until its promise resolves (stored blocks are made in one reused buffer,
 * the header and the last empty block are constants); otherwise it is the sink's to keep.
 * node:zlib's raw deflate at level 1, because on the export path compression is the biggest cost
 * after PostgreSQL's: measured in Bun 1.4.5 on 31 MB of Synthea ndjson in 256 KiB chunks,
 * CompressionStream (level 6) 170–178 ms, node:zlib level 6 104–114 ms, level 1 45–57 ms for a file
 * 1.6× bigger. The gzip header, CRC-32 and trailer are the writer's own, so that it can store what
 * does not compress (STORE_ABOVE) between the compressed parts; a compressor started after stored
 * bytes takes their last 32 KiB as its dictionary, so every back-reference points where the reader
 * expects. Written bytes are copied into a block of INPUT_BLOCK first (the caller may reuse its
 * buffer once `write` resolves), and the block is used again once zlib has read it; memory stays at
 * two blocks, the compressor's window and QUEUE_MAX of output per writer, and the writer leaves
 * next to no garbage (a fresh block per MiB of input took a `$dump` with 8 gzip clients to 360–460
 * MB before JSC collected).
 */
export function gzipWriter(sink: (chunk: Uint8Array, reused: boolean) => Promise<void>, level = 1): GzipWriter {
  let failure: unknown;
  let pending = Promise.resolve();
  let queued = 0;
  let block = Buffer.allocUnsafe(INPUT_BLOCK);
  let spare: typeof block | undefined;
  let filled = 0;
  let crc = 0;
  let length = 0;
  let started = false;
  let deflate: zlib.DeflateRaw | undefined; // while compressing, once it has had bytes
  let storing = false;
  let stored = 0;
  let history: Buffer | undefined; // the last WINDOW bytes stored, the next compressor's dictionary
  let compressed = 0; // bytes the compressors gave out
  let judgedIn = 0, judgedOut = 0; // input since the judgement began, and `compressed` then
  let storedSince = 0;
  let retryAfter = RETRY_AFTER;
  let retrying = false; // compressing again because storedSince reached retryAfter, not yet judged
  let scratch: Buffer | undefined;
  const dropped = new WeakSet<zlib.DeflateRaw>();

  /** Hands `bytes` to the sink after everything before them; a failed sink fails the writer. */
  function emit(bytes: Uint8Array, reused = true): void {
    queued += bytes.length;
    pending = pending
      .then(() => (failure === undefined ? sink(bytes, reused) : undefined))
      .then(() => { queued -= bytes.length; }, (err: unknown) => { failure ??= err; });
  }
  function compressor(): zlib.DeflateRaw {
    const d = zlib.createDeflateRaw({ level, chunkSize: OUTPUT_CHUNK, ...(history ? { dictionary: history } : {}) });
    d.on('data', (chunk: Buffer) => {
      // after its flush, bytes of it would land behind what followed: never seen, but never silently
      if (dropped.has(d)) failure ??= new Error('gzip writer: compressed bytes after the compressor was flushed');
      compressed += chunk.length;
      emit(chunk, false);
    });
    d.on('error', (err) => { failure ??= err; });
    return d;
  }
  /** Ends the compressor's output on a byte boundary (an empty non-final stored block), then drops it. */
  async function dropCompressor(d: zlib.DeflateRaw): Promise<void> {
    await settled(d, (done) => d.flush(zlib.constants.Z_SYNC_FLUSH, done));
    dropped.add(d);
    d.close();
  }
  /** Stores or compresses `bytes`; resolves true when nothing holds them any more (zlib has read them). */
  async function give(bytes: Uint8Array): Promise<boolean> {
    let released = true;
    if (!started) { started = true; emit(GZIP_HEADER); }
    crc = zlib.crc32(bytes, crc);
    length += bytes.length;
    if (storing && storedSince >= retryAfter) {
      storing = false; // to a new compressor, with history
      retrying = true;
    } else if (storing && compressible(bytes, level)) {
      storing = false;
      retryAfter = RETRY_AFTER;
    }
    if (storing) {
      // through one buffer of the writer's, each piece written before the next is made, so that
      // a 13 MB row (a Binary resource) is not copied whole; a failed sink is thrown by the caller
      scratch ??= Buffer.allocUnsafe(STORED_PIECE + 5 * Math.ceil(STORED_PIECE / STORED_MAX));
      for (let from = 0; from < bytes.length; from += STORED_PIECE) {
        emit(storedBlocks(bytes.subarray(from, from + STORED_PIECE), scratch));
        await pending;
      }
      stored += bytes.length;
      storedSince += bytes.length;
      history = bytes.length >= WINDOW ? Buffer.from(bytes.subarray(bytes.length - WINDOW)) : Buffer.concat([history ?? Buffer.alloc(0), bytes]).subarray(-WINDOW);
    } else {
      if (!deflate) {
        deflate = compressor();
        history = undefined; // the next stored bytes follow what this one compresses
      }
      const d = deflate;
      // drained: zlib has read every byte written (a write that fits its buffer may still be held)
      if (!d.write(bytes)) await settled(d, (done) => d.once('drain', done));
      else released = false;
      judgedIn += bytes.length;
      if (judgedIn >= JUDGE_BYTES) {
        if (compressed - judgedOut > STORE_ABOVE * judgedIn) {
          deflate = undefined;
          await dropCompressor(d);
          storing = true;
          storedSince = 0;
          if (retrying) retryAfter = Math.min(2 * retryAfter, RETRY_MAX);
        } else retryAfter = RETRY_AFTER;
        retrying = false;
        judgedIn = 0;
        judgedOut = compressed;
      }
    }
    if (queued > QUEUE_MAX) await pending;
    return released;
  }
  async function flush(): Promise<void> {
    if (filled === 0) return;
    const full = block;
    // the next bytes go to the spare block, or to a fresh one while zlib may hold the spare
    block = spare ?? Buffer.allocUnsafe(INPUT_BLOCK);
    spare = undefined;
    const n = filled;
    filled = 0;
    if (await give(full.subarray(0, n))) spare = full;
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
      if (!started) { started = true; emit(GZIP_HEADER); }
      const d = deflate;
      deflate = undefined;
      if (d) await settled(d, (done) => { d.once('end', done); d.end(); }); // its last block is final
      else emit(FINAL_EMPTY_BLOCK);
      const trailer = Buffer.allocUnsafe(8);
      trailer.writeUInt32LE(crc >>> 0, 0);
      trailer.writeUInt32LE(length >>> 0, 4);
      emit(trailer, false);
      await pending;
      if (failure !== undefined) throw failure;
    },
    abort() {
      failure ??= new Error('gzip writer: aborted');
      const d = deflate;
      deflate = undefined;
      if (d) { dropped.add(d); d.close(); }
    },
    get stored() {
      return stored;
    },
  };
  return writer;
}

/** Waits for what `start` awaits (it calls `done`), or for the stream to fail or close first. */
function settled(stream: zlib.DeflateRaw, start: (done: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('error', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('error', done);
    stream.once('close', done);
    start(done);
  });
}

/** Do samples of `bytes` come out of deflate at `level` under SAMPLED_BELOW of their size? */
function compressible(bytes: Uint8Array, level: number): boolean {
  let sampled = 0, out = 0;
  for (let k = 0; k < SAMPLES; k++) {
    const at = Math.floor((k * bytes.length) / SAMPLES);
    const sample = bytes.subarray(at, at + SAMPLE_BYTES);
    sampled += sample.length;
    out += zlib.deflateRawSync(sample, { level }).length;
  }
  return out < SAMPLED_BELOW * sampled;
}

/** `bytes` as non-final stored deflate blocks (LEN, NLEN, the bytes; at most STORED_MAX each), written into `out`. */
function storedBlocks(bytes: Uint8Array, out: Buffer): Buffer {
  let at = 0;
  for (let from = 0; from < bytes.length; from += STORED_MAX) {
    const n = Math.min(STORED_MAX, bytes.length - from);
    out[at] = 0;
    out.writeUInt16LE(n, at + 1);
    out.writeUInt16LE(n ^ 0xffff, at + 3);
    out.set(bytes.subarray(from, from + n), at + 5);
    at += 5 + n;
  }
  return out.subarray(0, at);
}
