/**
 * Byte helpers for the `$dump` line splicer (dump-lines.ts). They exist because, in Bun 1.4.5,
 * per-row `Buffer#subarray` (≈ 0.5 µs) and `String(n)` (≈ 0.3 µs) cost more than the work they
 * wrap, and a per-row bounded search needs one of those subarrays.
 */

/**
 * `find(buf, start, end)` says whether `needle` occurs in `buf[start, end)`, for ranges visited in
 * increasing order within one buffer. It remembers where the needle occurs next, so a chunk of
 * rows costs one forward scan per needle, not one scan per row to the end of the chunk.
 */
export function forwardFinder(needle: string): (buf: Buffer, start: number, end: number) => boolean {
  const bytes = Buffer.from(needle);
  let within: Buffer | undefined;
  let next = -1;
  return (buf, start, end) => {
    if (buf !== within || (next !== -1 && next < start)) {
      within = buf;
      next = buf.indexOf(bytes, start);
    }
    return next !== -1 && next + bytes.length <= end;
  };
}

/** Does `buf` hold `bytes` at `at`? */
export function matchesAt(buf: Buffer, at: number, bytes: Buffer): boolean {
  if (at + bytes.length > buf.length) return false;
  for (let i = 0; i < bytes.length; i++) if (buf[at + i] !== bytes[i]) return false;
  return true;
}

/** Writes the big-endian int8 at `buf[at]` as decimal digits into `out` at `pos`; returns the new pos. */
export function writeInt8Decimal(out: Buffer, pos: number, buf: Buffer, at: number): number {
  const hi = buf.readInt32BE(at);
  if (hi < 0 || hi >= 0x200000) return pos + out.write(buf.readBigInt64BE(at).toString(), pos, 'latin1');
  let n = hi * 4294967296 + buf.readUInt32BE(at + 4); // < 2^53: exact
  let digits = 1;
  for (let m = n; m >= 10; m = Math.floor(m / 10)) digits++;
  for (let i = pos + digits - 1; i >= pos; i--) {
    const q = Math.floor(n / 10);
    out[i] = 0x30 + (n - q * 10);
    n = q;
  }
  return pos + digits;
}

/**
 * Copies a short constant into `out` at `pos`; returns the new pos. A JIT-compiled loop beats
 * `TypedArray#set` and `Buffer#copy` for the 20–50 byte pieces of a line (those two took 33% of
 * the splicer's time in a CPU profile of 100,000 demo rows).
 */
export function putBytes(out: Buffer, pos: number, bytes: Buffer): number {
  for (let i = 0; i < bytes.length; i++) out[pos++] = bytes[i]!;
  return pos;
}
