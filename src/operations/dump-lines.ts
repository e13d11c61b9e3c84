/**
 * `$dump` lines from `COPY (select id, txid, ts, resource …) TO STDOUT (FORMAT binary)` tuples:
 * `{"resourceType":"T","id":"…","meta":{"versionId":"…","lastUpdated":"…", …stored meta}, …rest}`.
 *
 * Why the line is assembled here and not in SQL: PostgreSQL turning jsonb into text is the whole
 * cost of a dump (SPEC §9 compares with raw `COPY (select resource …)`), and rebuilding id/meta
 * with jsonb functions costs 2–3× that (issue #3). Here the line is spliced from bytes: the jsonb
 * text is copied as is. Rows written by SQL (SPEC §2) may hold what the columns hold: a stored
 * meta with a versionId or lastUpdated of its own (rows copied from another server, which all
 * have them) is spliced member by member without those two (rebuilt, such rows made a `$dump` of
 * HAPI-style data 2.5× slower: 0.37× of the two-core limit); a top level with `id` or
 * `resourceType` (a whole resource inserted) is walked member by member and spliced without them.
 * Only what is not an object, a row with an escaped key and Client rows take the slow path
 * (JSON.parse, then the same rebuild as the REST read).
 *
 * The fast-path tests rely on jsonb's text output: keys sorted by byte length, then bytes, and
 * written `"key": value`. So a top-level "id" would be among the first keys of length ≤ 2, and a
 * top-level "meta" among those of length ≤ 4, in front of every longer key. When a 3–4 byte key
 * comes first ("code" of an Observation, "date", "name") and "meta" occurs in the row, the members
 * of up to 4 bytes are walked to find a top-level meta: an Observation with `meta.profile` took
 * the slow path before (JSON.parse + JSON.stringify, about 15 % of the server's CPU in a $dump of
 * the Synthea small-resource mix).
 *
 * Written against Bun's costs, measured in process on 100,000 demo rows: 10 µs per row at first,
 * mostly a fresh 256 KiB buffer per chunk while chunks held one row each; with chunks of many
 * rows, byte loops instead of per-row `Buffer#subarray` (≈ 0.5 µs each in Bun 1.4.5) and
 * `String(n)`, and one forward scan per needle per chunk, 0.3–0.4 µs per row once JIT-compiled.
 */
import { fromRow, isPlainObject } from '../fhir/resource.ts';
import { parseKeepingNumbers } from '../fhir/json-numbers.ts';
import { present } from './server-types.ts';
import { readTimestamptzInstant, JSONB_HEADER_BYTES } from '../storage/copy-binary.ts';
import { forwardFinder, matchesAt, putBytes, writeInt8Decimal } from './dump-bytes.ts';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const CHUNK_BYTES = 256 * 1024;
const META_OPEN = Buffer.from('","meta":{"versionId":"');
const META_FIRST = Buffer.from('{"meta": {');
const META_KEY = Buffer.from('"meta"');
const RESOURCE_TYPE_KEY = Buffer.from('"resourceType"');
const VERSION_ID_KEY = Buffer.from('"versionId"');
const ID_KEY = Buffer.from('"id"');
const LAST_UPDATED_KEY = Buffer.from('"lastUpdated"');

/** How a row's line is made (see tuple). */
type Shape = 'slow' | 'walk' | 'empty' | 'meta-first' | 'meta-inside' | 'meta-stamped' | 'no-meta';

export interface LineWriter {
  /** Appends the line of one tuple (fields: id text, txid int8, ts timestamptz, resource jsonb). */
  tuple(buf: Buffer, fields: Int32Array): void;
  /** The bytes written since the last call, in chunks of about 256 KiB. */
  take(): Uint8Array[];
}

/**
 * `chunkBytes`: the size of the buffers lines are written into (256 KiB, the `$dump` response's
 * chunks); `$export` takes 1 MiB, so that its gzip gets big blocks it need not copy (gzip.ts).
 * Bytes handed out by `take` are never written over.
 */
export function lineWriter(type: string, chunkBytes = CHUNK_BYTES): LineWriter {
  const prefix = Buffer.from(`{"resourceType":${JSON.stringify(type)},"id":"`);
  const slowOnly = type === 'Client'; // the secret must go (present()), so every row is rebuilt
  const hasResourceType = forwardFinder('"resourceType": ');
  const hasMeta = forwardFinder('"meta": ');
  const hasVersionId = forwardFinder('"versionId": ');
  const hasLastUpdated = forwardFinder('"lastUpdated": ');
  let out = Buffer.allocUnsafe(chunkBytes);
  let pos = 0;
  let start = 0; // out[start, pos) is written but not yet taken
  let done: Uint8Array[] = [];
  let tsHi = 0, tsLo = -1;
  let lastUpdated: string | undefined;
  let lastUpdatedBytes = Buffer.alloc(0); // `","lastUpdated":"…"` or empty for an infinite ts

  function ensure(bytes: number): void {
    if (pos + bytes <= out.length) return;
    if (pos > start) done.push(out.subarray(start, pos));
    out = Buffer.allocUnsafe(Math.max(chunkBytes, bytes));
    pos = 0;
    start = 0;
  }

  // Where shapeOf found a top-level "meta" that is not the first member ('meta-inside'), or one
  // holding a versionId or lastUpdated of its own ('meta-stamped'), or walkMembers found one
  // ('walk'; metaOpen -1 when there is none): the `"` of its key, the `{` of its value, and just
  // after its `}`.
  let metaKey = 0, metaOpen = 0, metaEnd = 0;

  /** Fast-path splice, or 'slow' (see the module comment for why these tests suffice). */
  function shapeOf(buf: Buffer, rs: number, re: number): Exclude<Shape, 'walk'> {
    if (re - rs === 2 && buf[rs] === 0x7b && buf[rs + 1] === 0x7d) return 'empty';
    if (buf[rs] !== 0x7b || buf[rs + 1] !== QUOTE) return 'slow'; // not an object: rebuilt as {}
    // Nested resources (`contained`, e.g. every Synthea ExplanationOfBenefit) hold "resourceType":
    // only a top-level one, possible in rows inserted by hand, needs the rebuild.
    if (hasResourceType(buf, rs, re) && topLevelKey(buf, rs, re, RESOURCE_TYPE_KEY) !== 'absent') return 'slow';
    const keyEnd = keyClose(buf, rs + 1, re);
    if (keyEnd < 0) return 'slow';
    const keyLength = keyEnd - rs - 2;
    if (keyLength < 3) return 'slow'; // "id", or a short key in front of where "id" would be
    if (matchesAt(buf, rs, META_FIRST)) {
      if (!hasVersionId(buf, rs, re) && !hasLastUpdated(buf, rs, re)) return 'meta-first';
      metaKey = rs + 1;
      metaOpen = rs + META_FIRST.length - 1;
      metaEnd = skipValue(buf, metaOpen, re);
      return metaEnd < 0 ? 'slow' : 'meta-stamped';
    }
    if (keyLength >= 5) return 'no-meta'; // no top-level key of length ≤ 4, so no top-level meta
    if (!hasMeta(buf, rs, re)) return 'no-meta';
    // A 3–4 byte key ("code", "date", "name" …) comes first and "meta" occurs somewhere: walk the
    // top-level members shorter than 5 bytes (they come first) to find a top-level meta.
    const found = topLevelMeta(buf, rs, re);
    if (found !== 'meta-inside') return found;
    return hasVersionId(buf, rs, re) || hasLastUpdated(buf, rs, re) ? 'meta-stamped' : 'meta-inside';
  }

  /**
   * Copies the members of the stored meta object `buf[metaOpen, metaEnd)` but its own versionId and
   * lastUpdated (the columns win, as in fromRow), each after `, `; false when the text is not as
   * jsonb writes it (the caller then takes the slow path; nothing is written).
   */
  function copyMetaKeeping(buf: Buffer): boolean {
    if (buf[metaOpen + 1] === 0x7d) return metaOpen + 2 === metaEnd;
    const mark = pos;
    for (let key = metaOpen + 1; key > 0;) {
      const close = keyClose(buf, key, metaEnd);
      const end = close < 0 ? -1 : memberEnd(buf, close, metaEnd);
      if (end < 0) break;
      if (!matchesAt(buf, key, VERSION_ID_KEY) && !matchesAt(buf, key, LAST_UPDATED_KEY)) {
        out[pos++] = 0x2c;
        out[pos++] = 0x20;
        pos += buf.copy(out, pos, key, end);
      }
      key = nextKey(buf, end, metaEnd);
      if (key === 0) return true;
    }
    pos = mark;
    return false;
  }

  /**
   * Whether `buf[rs, re)` is an object as jsonb writes it, member by member (no escaped key); finds
   * its top-level meta when that is an object (metaKey/metaOpen/metaEnd; metaOpen -1 if none). For
   * the rows shapeOf sends to the slow path because their top level has `id` or `resourceType`:
   * walked and spliced, they cost a scan of their bytes instead of JSON.parse + JSON.stringify.
   */
  function walkMembers(buf: Buffer, rs: number, re: number): boolean {
    if (buf[rs] !== 0x7b) return false;
    metaOpen = -1;
    for (let key = rs + 1; key > 0;) {
      const close = keyClose(buf, key, re);
      const end = close < 0 ? -1 : memberEnd(buf, close, re);
      if (end < 0) return false;
      if (buf[close + 3] === 0x7b && matchesAt(buf, key, META_KEY)) { metaKey = key; metaOpen = close + 3; metaEnd = end; }
      key = nextKey(buf, end, re);
      if (key === 0) return true;
    }
    return false;
  }

  /** The members of an object walkMembers accepted but id, resourceType and meta, each after `, `. */
  function copyMembersExcept(buf: Buffer, rs: number, re: number): void {
    for (let key = rs + 1; key > 0; ) {
      const end = memberEnd(buf, keyClose(buf, key, re), re);
      if (!matchesAt(buf, key, ID_KEY) && !matchesAt(buf, key, RESOURCE_TYPE_KEY) && !matchesAt(buf, key, META_KEY)) {
        out[pos++] = 0x2c;
        out[pos++] = 0x20;
        pos += buf.copy(out, pos, key, end);
      }
      key = nextKey(buf, end, re);
    }
  }

  function topLevelMeta(buf: Buffer, rs: number, re: number): 'slow' | 'no-meta' | 'meta-inside' {
    for (let key = rs + 1; ;) {
      const close = keyClose(buf, key, re);
      if (close < 0) return 'slow';
      if (close - key > 5) return 'no-meta'; // a key of 5 bytes or more: every later one is too
      const end = memberEnd(buf, close, re);
      if (end < 0) return 'slow';
      if (close - key === 5 && matchesAt(buf, key, META_KEY)) {
        if (buf[close + 3] !== 0x7b) return 'slow'; // a meta that is not an object: rebuilt
        metaKey = key;
        metaOpen = close + 3;
        metaEnd = end;
        return 'meta-inside';
      }
      if (buf[end] !== 0x2c) return 'no-meta'; // `}`: the last member
      key = end + 2; // `, `
    }
  }

  function tuple(buf: Buffer, f: Int32Array): void {
    const idStart = f[0]!, idEnd = idStart + f[1]!, txidAt = f[2]!, tsAt = f[4]!;
    const hi = buf.readInt32BE(tsAt), lo = buf.readUInt32BE(tsAt + 4);
    if (lo !== tsLo || hi !== tsHi) {
      // rows written together share one ts (their transaction's now()), so this runs rarely
      tsHi = hi;
      tsLo = lo;
      lastUpdated = readTimestamptzInstant(buf, tsAt);
      lastUpdatedBytes = Buffer.from(lastUpdated === undefined ? '"' : `","lastUpdated":"${lastUpdated}"`);
    }
    const rs = f[6]! + JSONB_HEADER_BYTES;
    const re = f[6]! + f[7]!;
    const spliceable = !slowOnly && plainId(buf, idStart, idEnd);
    let shape: Shape = spliceable ? shapeOf(buf, rs, re) : 'slow';
    if (shape === 'slow' && spliceable && walkMembers(buf, rs, re)) shape = 'walk';
    if (shape === 'slow') return slow(buf, f);

    ensure(prefix.length + (idEnd - idStart) + 128 + (re - rs));
    const lineStart = pos;
    pos = putBytes(out, pos, prefix);
    for (let i = idStart; i < idEnd; i++) out[pos++] = buf[i]!;
    pos = putBytes(out, pos, META_OPEN);
    pos = writeInt8Decimal(out, pos, buf, txidAt);
    pos = putBytes(out, pos, lastUpdatedBytes);
    if (shape === 'meta-stamped') {
      // {…, "meta": {…, "versionId": …}, …} (rows written by SQL, SPEC §2): ours, then the stored
      // fields but those two, then the members before meta, then those after it
      if (!copyMetaKeeping(buf)) { pos = lineStart; return slow(buf, f); }
      out[pos++] = 0x7d;
      if (metaKey > rs + 1) {
        out[pos++] = 0x2c;
        out[pos++] = 0x20;
        pos += buf.copy(out, pos, rs + 1, metaKey - 2);
      }
      pos += buf.copy(out, pos, metaEnd, re);
    } else if (shape === 'meta-first') {
      // {"meta": {…}, …}: our two fields go in front of the stored ones
      const from = rs + META_FIRST.length;
      if (buf[from] !== 0x7d) { out[pos++] = 0x2c; out[pos++] = 0x20; }
      pos += buf.copy(out, pos, from, re);
    } else if (shape === 'meta-inside') {
      // {"code": …, "meta": {…}, …}: meta (ours, then the stored fields) first, then the members
      // before it, then those after it
      if (buf[metaOpen + 1] !== 0x7d) { out[pos++] = 0x2c; out[pos++] = 0x20; pos += buf.copy(out, pos, metaOpen + 1, metaEnd - 1); }
      out[pos++] = 0x7d;
      out[pos++] = 0x2c;
      out[pos++] = 0x20;
      pos += buf.copy(out, pos, rs + 1, metaKey - 2);
      pos += buf.copy(out, pos, metaEnd, re);
    } else if (shape === 'walk') {
      // {"id": …, "meta": …, …, "resourceType": …} (a whole resource written by SQL, SPEC §2): ours,
      // the stored meta's fields but its stamps, then every member but id, resourceType and meta
      if (metaOpen >= 0 && !copyMetaKeeping(buf)) { pos = lineStart; return slow(buf, f); }
      out[pos++] = 0x7d;
      copyMembersExcept(buf, rs, re);
      out[pos++] = 0x7d;
    } else if (shape === 'empty') {
      out[pos++] = 0x7d;
      out[pos++] = 0x7d;
    } else {
      out[pos++] = 0x7d;
      out[pos++] = 0x2c;
      out[pos++] = 0x20;
      pos += buf.copy(out, pos, rs + 1, re);
    }
    out[pos++] = 0x0a;
  }

  function slow(buf: Buffer, f: Int32Array): void {
    const text = f[7]! > JSONB_HEADER_BYTES ? buf.toString('utf8', f[6]! + JSONB_HEADER_BYTES, f[6]! + f[7]!) : '{}';
    const parsed = parseKeepingNumbers(text);
    const txid = buf.readBigInt64BE(f[2]!).toString();
    const id = buf.toString('utf8', f[0]!, f[0]! + f[1]!);
    const row = { id, txid, last_updated: lastUpdated ?? '', resource_type: type, resource: isPlainObject(parsed) ? parsed : {} };
    const full = present(fromRow(row));
    if (lastUpdated === undefined && full.meta) delete full.meta.lastUpdated;
    const line = Buffer.from(JSON.stringify(full) + '\n');
    ensure(line.length);
    pos += line.copy(out, pos);
  }

  function take(): Uint8Array[] {
    if (pos > start) {
      // Writing goes on after the handed-out bytes, never over them (enqueue does not transfer
      // the buffer). A fresh 256 KiB buffer per take cost 3.6 µs per row when rows came one by one.
      done.push(out.subarray(start, pos));
      start = pos;
    }
    const chunks = done;
    done = [];
    return chunks;
  }

  return { tuple, take };
}

/**
 * Whether the object text `buf[rs, re)` (jsonb's output: members `"key": value` joined by `, `,
 * keys sorted by byte length, then by bytes) has a top-level member named `key` (quoted). Walks
 * the members from the LAST one back, and stops at the first key that sorts before `key`: only
 * the members with longer keys are skipped. 'unsure' when the text is not as jsonb writes it.
 * Measured: the 7,394 ExplanationOfBenefit rows per 100,000 of the Synthea mix (5 KB, each with
 * `contained` resources, so `"resourceType": ` occurs in every one) took the JSON.parse +
 * JSON.stringify path at first, about half of the server's CPU in a `$dump` of the mix; walked
 * from the first member, ~9 µs each, 44 % of the splicer's time on the mix, because their
 * 5 KB `item` comes before `resourceType` in key order; walked from the last, only their
 * `billablePeriod` is skipped (probe-dump.ts PER_TYPE=1: 131 ms → see BENCHMARKS.md change 5).
 */
export function topLevelKey(buf: Buffer, rs: number, re: number, key: Buffer): 'present' | 'absent' | 'unsure' {
  if (re - rs < 2 || buf[rs] !== 0x7b || buf[re - 1] !== 0x7d) return 'unsure';
  if (re - rs === 2) return 'absent';
  let p = re - 2; // the last byte of the last member's value
  for (;;) {
    const value = valueStart(buf, rs + 1, p);
    if (value < 0) return 'unsure';
    if (buf[value - 1] !== 0x20 || buf[value - 2] !== 0x3a || buf[value - 3] !== QUOTE) return 'unsure'; // `": `
    const keyEnd = value - 3;
    let keyStart = keyEnd - 1;
    while (keyStart > rs && buf[keyStart] !== QUOTE) {
      if (buf[keyStart] === BACKSLASH) return 'unsure';
      keyStart--;
    }
    if (keyStart <= rs || buf[keyStart - 1] === BACKSLASH) return 'unsure';
    const order = compareKeys(buf, keyStart, keyEnd + 1, key);
    if (order === 0) return 'present';
    if (order < 0) return 'absent'; // every key before this one sorts before it, so before `key`
    if (keyStart - 1 === rs) return 'absent'; // that was the first member
    if (buf[keyStart - 1] !== 0x20 || buf[keyStart - 2] !== 0x2c) return 'unsure'; // `, `
    p = keyStart - 3;
  }
}

/** jsonb's key order of the quoted key `buf[start, end)` against `key` (quoted): length, then bytes. */
function compareKeys(buf: Buffer, start: number, end: number, key: Buffer): number {
  if (end - start !== key.length) return end - start - key.length;
  for (let i = 0; i < key.length; i++) {
    const d = buf[start + i]! - key[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * The start of the JSON value whose last byte is `buf[p]`, scanning back no further than `lo`;
 * -1 when no value in jsonb's text output ends there.
 */
function valueStart(buf: Buffer, lo: number, p: number): number {
  const last = buf[p];
  if (last === QUOTE) return stringStart(buf, lo, p);
  if (last === 0x7d || last === 0x5d) {
    let depth = 0;
    for (let i = p; i >= lo; i--) {
      const b = buf[i]!;
      if (b === QUOTE) {
        i = stringStart(buf, lo, i); // outside a string a quote ends one; go on before its start
        if (i < 0) return -1;
      } else if (b === 0x7d || b === 0x5d) {
        depth++;
      } else if (b === 0x7b || b === 0x5b) {
        if (--depth === 0) return i;
      }
    }
    return -1;
  }
  // a number, true, false or null: no space, quote, bracket, comma or colon in it
  let i = p;
  for (; i >= lo; i--) {
    const b = buf[i]!;
    if (b === 0x20) return i + 1;
    if (b === QUOTE || b === 0x2c || b === 0x3a || b === 0x7b || b === 0x7d || b === 0x5b || b === 0x5d) return -1;
  }
  return -1;
}

/** The opening quote of the string whose closing quote is `buf[q]`, or -1. */
function stringStart(buf: Buffer, lo: number, q: number): number {
  for (let i = q - 1; i >= lo; i--) {
    if (buf[i] !== QUOTE) continue;
    let slashes = 0;
    for (let j = i - 1; j >= lo && buf[j] === BACKSLASH; j--) slashes++;
    if (slashes % 2 === 0) return i;
  }
  return -1;
}

/**
 * The end (just past) of the JSON value at `p` in jsonb's text output, or -1 if it does not end
 * before `re`. Strings are skipped with their escapes, objects and arrays by depth.
 */
function skipValue(buf: Buffer, p: number, re: number): number {
  let depth = 0;
  for (let i = p; i < re; i++) {
    const b = buf[i]!;
    if (b === QUOTE) {
      for (i++; i < re && buf[i] !== QUOTE; i++) if (buf[i] === BACKSLASH) i++;
      if (depth === 0) return i + 1;
    } else if (b === 0x7b || b === 0x5b) {
      depth++;
    } else if (b === 0x7d || b === 0x5d) {
      if (depth === 0) return i; // the end of the enclosing object: a scalar ended here
      if (--depth === 0) return i + 1;
    } else if (b === 0x2c && depth === 0) {
      return i;
    }
  }
  return -1;
}

/**
 * The closing quote of the key whose opening quote is `buf[key]`, or -1 when there is none before
 * `limit` or the key has an escape (not as jsonb writes the keys the splicer looks for).
 */
function keyClose(buf: Buffer, key: number, limit: number): number {
  if (buf[key] !== QUOTE) return -1;
  for (let p = key + 1; p < limit; p++) {
    if (buf[p] === QUOTE) return p;
    if (buf[p] === BACKSLASH) return -1;
  }
  return -1;
}

/** Just past the value of the member whose key closes at `close` (`": ` then the value), or -1. */
function memberEnd(buf: Buffer, close: number, limit: number): number {
  if (buf[close + 1] !== 0x3a || buf[close + 2] !== 0x20) return -1;
  return skipValue(buf, close + 3, limit);
}

/**
 * After a member of the object ending at `limit` (just past its `}`) that ends at `end`: the next
 * key's quote (after `, `), 0 when `end` is that object's closing `}`, -1 when neither.
 */
function nextKey(buf: Buffer, end: number, limit: number): number {
  if (buf[end] === 0x7d) return end + 1 === limit ? 0 : -1;
  return buf[end] === 0x2c && buf[end + 1] === 0x20 ? end + 2 : -1;
}

/** Ids that need no JSON escaping (no quote, backslash or control byte); every FHIR id is one. */
function plainId(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b === QUOTE || b === BACKSLASH || b < 0x20) return false;
  }
  return true;
}
