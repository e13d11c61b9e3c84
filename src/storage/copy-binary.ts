/**
 * A decoder and an encoder for PostgreSQL's binary COPY format
 * (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4): an 11-byte signature,
 * flags and a header extension, then per tuple an int16 field count and per field an int32 length
 * (-1 = NULL) followed by the bytes, then an int16 -1 trailer.
 *
 * Binary rather than text COPY for `$dump`: the jsonb field arrives as a version byte plus its
 * text, with no COPY escaping to undo (text COPY doubles every backslash), and every field comes
 * length-prefixed, so splitting rows needs no byte scan.
 */
import { finished } from 'node:stream/promises';
import type { Writable } from 'node:stream';

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/**
 * Called once per tuple. `fields[2i]` is the offset of field i in `buf`, `fields[2i + 1]` its
 * length (-1 for NULL). Both are only valid during the call: the arrays are reused.
 */
export type TupleHandler = (buf: Buffer, fields: Int32Array) => void;

export interface CopyBinaryDecoder {
  /** Decodes every complete tuple of `chunk` (plus what was left of the previous one). */
  push(chunk: Uint8Array): void;
  /** Throws when the stream ended before the trailer (a truncated COPY). */
  end(): void;
}

export function copyBinaryDecoder(fieldCount: number, onTuple: TupleHandler): CopyBinaryDecoder {
  const fields = new Int32Array(fieldCount * 2);
  let rest: Buffer | undefined;
  let headerDone = false;
  let trailerSeen = false;

  function header(buf: Buffer): number {
    if (buf.length < 19) return -1;
    if (!buf.subarray(0, 11).equals(SIGNATURE)) throw new Error('COPY BINARY stream has a wrong signature');
    const extension = buf.readUInt32BE(15);
    if (buf.length < 19 + extension) return -1;
    headerDone = true;
    return 19 + extension;
  }

  function push(chunk: Uint8Array): void {
    const input = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const buf = rest === undefined ? input : Buffer.concat([rest, input]);
    rest = undefined;
    let pos = 0;
    if (!headerDone) {
      pos = header(buf);
      if (pos < 0) { rest = Buffer.from(buf); return; }
    }
    const length = buf.length;
    while (pos + 2 <= length) {
      if (trailerSeen) throw new Error('COPY BINARY stream has data after its trailer');
      const count = buf.readInt16BE(pos);
      if (count === -1) { trailerSeen = true; pos += 2; continue; }
      if (count !== fieldCount) throw new Error(`COPY BINARY tuple has ${count} fields, expected ${fieldCount}`);
      let p = pos + 2;
      let complete = true;
      for (let i = 0; i < fieldCount; i++) {
        if (p + 4 > length) { complete = false; break; }
        const size = buf.readInt32BE(p);
        p += 4;
        fields[2 * i] = p;
        fields[2 * i + 1] = size;
        if (size > 0) p += size;
        if (p > length) { complete = false; break; }
      }
      if (!complete) break;
      onTuple(buf, fields);
      pos = p;
    }
    // A partial tuple waits for the next chunk. postgres.js hands over whole CopyData messages, and
    // PostgreSQL sends one per row, so this copy is the exception, not the rule.
    if (pos < length) rest = Buffer.from(buf.subarray(pos));
  }

  function end(): void {
    if (!trailerSeen || rest !== undefined) throw new Error('COPY BINARY stream ended before its trailer (truncated)');
  }

  return { push, end };
}

/** jsonb's binary form is a version byte (1) followed by the same text `jsonb_out` writes. */
export const JSONB_HEADER_BYTES = 1;

/** 2000-01-01T00:00:00Z, PostgreSQL's epoch for timestamps, in Unix milliseconds. */
const PG_EPOCH_MS = 946_684_800_000;

/**
 * An instant as `Version.ts` writes it (`2024-01-31T12:00:00.123456Z`, UTC, years 1000–9999) as
 * a timestamptz field's value: microseconds since 2000-01-01 UTC.
 */
export function timestamptzMicros(instant: string): bigint {
  const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})(\d{3})Z$/.exec(instant);
  const ms = match ? Date.parse(`${match[1]}Z`) : Number.NaN;
  if (!match || Number.isNaN(ms)) throw new Error(`not an instant with microseconds: ${JSON.stringify(instant)}`);
  return BigInt(ms - PG_EPOCH_MS) * 1000n + BigInt(Number(match[2]));
}

/**
 * A timestamptz field (int64 microseconds since 2000-01-01 UTC) as the text
 * `to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')` gives (storage LAST_UPDATED),
 * for years 1–9999; undefined for ±infinity, where to_char gives NULL.
 */
export function readTimestamptzInstant(buf: Buffer, offset: number): string | undefined {
  const hi = buf.readInt32BE(offset);
  const lo = buf.readUInt32BE(offset + 4);
  if ((hi === 0x7fffffff && lo === 0xffffffff) || (hi === -0x80000000 && lo === 0)) return undefined;
  let ms: number;
  let micros: number;
  if (hi >= -0x200000 && hi < 0x200000) {
    const us = hi * 4294967296 + lo; // |us| < 2^53: exact (years 1715–2285)
    ms = Math.floor(us / 1000);
    micros = us - ms * 1000;
  } else {
    const us = buf.readBigInt64BE(offset);
    const floor = us >= 0n ? us / 1000n : -((-us + 999n) / 1000n);
    ms = Number(floor);
    micros = Number(us - floor * 1000n);
  }
  const date = new Date(PG_EPOCH_MS + ms);
  const year = date.getUTCFullYear();
  const iso = date.toISOString();
  const body = year >= 0 && year <= 9999 ? iso.slice(0, 23) : `${String(Math.abs(year)).padStart(4, '0')}${iso.slice(iso.indexOf('-', 1), 23)}`;
  return `${body}${String(micros).padStart(3, '0')}Z`;
}

/** The `text` type's oid: the element type of a `text[]` field. */
const TEXT_OID = 25;

/**
 * Writes tuples in the binary COPY format to the Writable of a `COPY … FROM STDIN (format binary)`
 * (postgres.js `.writable()`), in chunks of `chunkBytes` or more, honouring the socket's
 * backpressure. Binary rather than text or CSV for `$load` and `$import`: PostgreSQL then takes
 * every field by its length instead of scanning each byte for delimiters and quotes, and a
 * timestamp or bigint costs no parsing: the COPY of 200,000 small resources took 10 % less
 * PostgreSQL time into a staging table, and 20 % less straight into a resource table with
 * explicit timestamps (BENCHMARKS.md, change 7).
 *
 * A tuple is written synchronously, field by field, after `fits(worst)` said the chunk has room
 * for it (else `await flush(worst)` first): one await per chunk, not per row.
 */
export class CopyBinaryWriter {
  private buffer: Buffer;
  private used = 0;
  private failure: unknown;

  constructor(private readonly writable: Writable, private readonly chunkBytes = 1 << 20) {
    writable.on('error', (err) => { this.failure ??= err; });
    this.buffer = Buffer.allocUnsafe(chunkBytes);
    SIGNATURE.copy(this.buffer, 0);
    this.buffer.writeUInt32BE(0, 11); // flags
    this.buffer.writeUInt32BE(0, 15); // header extension length
    this.used = 19;
  }

  /** Whether `bytes` more fit in the current chunk. */
  fits(bytes: number): boolean {
    return this.used + bytes <= this.buffer.length;
  }

  /** Sends the chunk so far and starts one of at least `bytes`; waits while the socket is full. */
  async flush(bytes = 0): Promise<void> {
    if (this.failure) throw this.failure;
    const ok = this.used === 0 || this.writable.write(this.buffer.subarray(0, this.used));
    // A new buffer each time: the Writable may keep the chunk queued until the socket takes it.
    this.buffer = Buffer.allocUnsafe(Math.max(this.chunkBytes, bytes));
    this.used = 0;
    if (!ok) await drained(this.writable);
  }

  tuple(fields: number): void {
    this.used = this.buffer.writeInt16BE(fields, this.used);
  }

  null(): void {
    this.used = this.buffer.writeInt32BE(-1, this.used);
  }

  int4(value: number): void {
    this.used = this.buffer.writeInt32BE(4, this.used);
    this.used = this.buffer.writeInt32BE(value, this.used);
  }

  int8(value: bigint): void {
    this.used = this.buffer.writeInt32BE(8, this.used);
    this.used = this.buffer.writeBigInt64BE(value, this.used);
  }

  /** A text (or enum) field; worst case 4 + 3 × length bytes. */
  text(value: string): void {
    const n = this.buffer.write(value, this.used + 4, 'utf8');
    this.buffer.writeInt32BE(n, this.used);
    this.used += 4 + n;
  }

  /** A jsonb field from its JSON text; worst case 5 + 3 × length bytes. */
  jsonb(json: string): void {
    this.buffer[this.used + 4] = 1; // jsonb's binary version
    const n = this.buffer.write(json, this.used + 5, 'utf8');
    this.buffer.writeInt32BE(n + 1, this.used);
    this.used += 5 + n;
  }

  /** A one-dimensional text[] without NULLs; worst case 24 + Σ(4 + 3 × length) bytes. */
  textArray(items: readonly string[]): void {
    const start = this.used;
    let p = start + 4;
    p = this.buffer.writeInt32BE(items.length === 0 ? 0 : 1, p); // dimensions
    p = this.buffer.writeInt32BE(0, p); // no NULLs
    p = this.buffer.writeInt32BE(TEXT_OID, p);
    if (items.length > 0) {
      p = this.buffer.writeInt32BE(items.length, p);
      p = this.buffer.writeInt32BE(1, p); // lower bound
      for (const item of items) {
        const n = this.buffer.write(item, p + 4, 'utf8');
        this.buffer.writeInt32BE(n, p);
        p += 4 + n;
      }
    }
    this.buffer.writeInt32BE(p - start - 4, start);
    this.used = p;
  }

  /** Writes the trailer, ends the COPY and waits for PostgreSQL's answer. */
  async end(): Promise<void> {
    if (!this.fits(2)) await this.flush(2);
    this.tuple(-1);
    await this.flush();
    this.writable.end();
    await finished(this.writable);
    if (this.failure) throw this.failure;
  }

  /** Fails the COPY (postgres.js sends CopyFail): the statement, and so the transaction, errs. */
  async abort(err: unknown): Promise<void> {
    this.writable.destroy(err instanceof Error ? err : new Error(String(err)));
    await finished(this.writable).catch(() => {});
  }
}

function drained(writable: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: unknown) => {
      writable.off('drain', done);
      writable.off('error', done);
      writable.off('close', done);
      if (err) reject(err);
      else if (writable.destroyed && !writable.writableFinished) reject(new Error('COPY stream closed'));
      else resolve();
    };
    writable.on('drain', done);
    writable.on('error', done);
    writable.on('close', done);
  });
}

/**
 * One binary `COPY … FROM STDIN` (its `writable`) of `rows`: `encode` writes each row's tuple once
 * `bytes(row)`, its worst size, fits in the chunk. Synchronous per row; only a full chunk awaits
 * (an await per row costs a microtask each). If `rows` or `encode` throws, the COPY is failed
 * (CopyFail) and the error rethrown: the caller's transaction is then unusable. Returns the row count.
 */
export async function copyRows<T extends object>(
  writable: Writable,
  rows: Iterable<T> | AsyncIterable<T | T[]>,
  bytes: (row: T) => number,
  encode: (writer: CopyBinaryWriter, row: T) => void,
): Promise<number> {
  const writer = new CopyBinaryWriter(writable);
  let count = 0;
  try {
    for await (const item of rows as AsyncIterable<T | T[]>) {
      for (const row of Array.isArray(item) ? item : [item]) {
        const worst = bytes(row);
        if (!writer.fits(worst)) await writer.flush(worst);
        encode(writer, row);
        count++;
      }
    }
  } catch (err) {
    await writer.abort(err);
    throw err;
  }
  await writer.end();
  return count;
}
