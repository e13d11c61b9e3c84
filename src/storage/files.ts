/**
 * `$export` files on disk (SPEC §12): `<export dir>/<job id>/<name>.gz`, one gzip per file.
 * - writing: ndjson lines in, cut into files of at most N lines, each gzipped as it is written
 *   (memory stays at a chunk or two whatever the export's size);
 * - serving: the gzip bytes as they are (`Content-Encoding: gzip`) when the client accepts gzip,
 *   else decompressed on the way; a strong ETag per representation and one `Range` each, so a
 *   download can resume;
 * - expiry: a job's folder goes with its row.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { gunzipIfNeeded, gzipWriter, type GzipWriter } from '../streams/gzip.ts';
import { relieveMemory } from '../memory.ts';

const JOB_ID = /^[A-Za-z0-9-]{1,64}$/;
const FILE_NAME = /^[A-Za-z0-9.-]{1,128}$/;

export interface WrittenFile {
  name: string;
  count: number;
  bytes: number;
  plainBytes: number;
  etag: string;
}

/**
 * A file's strong ETag: random, made when the file is opened. A file is never changed once its
 * part is committed, and one written again (a part redone after a crash) gets a new one, so an
 * ETag names one content. It was a SHA-1 of the compressed bytes, 0.6 ms of the main thread per MB
 * written (80 ms per 128 MB in Bun 1.4.5), for nothing a random tag does not give.
 */
function newEtag(): string {
  return crypto.randomBytes(16).toString('hex');
}

export function jobDir(root: string, jobId: string): string {
  if (!JOB_ID.test(jobId)) throw new Error(`not an export id: ${jobId}`);
  return path.join(root, jobId);
}

function filePath(root: string, jobId: string, name: string): string {
  if (!FILE_NAME.test(name)) throw new Error(`not an export file name: ${name}`);
  return path.join(jobDir(root, jobId), `${name}.gz`);
}

export interface FileSplitter {
  /** Appends ndjson bytes (whole lines or not); a file is cut after its `maxLines`th line. */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Appends `chunks`, which hold exactly `lines` whole lines (the caller made them): when they fit
   * in the current file they are not scanned for newlines, else as `write`. The chunks' bytes must
   * never change afterwards: big ones are compressed without a copy (gzip.ts `writeOwned`).
   */
  writeLines(chunks: Uint8Array[], lines: number): Promise<void>;
  /** Closes the last file; returns every file written, in order. */
  close(): Promise<WrittenFile[]>;
  /** Lines written so far. */
  readonly lines: number;
}

/**
 * Writes ndjson into `root/jobId/<nameOf(0)>.gz`, `<nameOf(1)>.gz` …, a new file after every
 * `maxLines` lines; no empty file is ever created.
 */
export async function fileSplitter(root: string, jobId: string, options: { maxLines: number; nameOf: (index: number) => string }): Promise<FileSplitter> {
  await fs.promises.mkdir(jobDir(root, jobId), { recursive: true });
  const written: WrittenFile[] = [];
  let current: { name: string; handle: fs.promises.FileHandle; gzip: GzipWriter; etag: string; lines: number; bytes: number; plain: number } | undefined;
  let total = 0;

  async function open(): Promise<NonNullable<typeof current>> {
    const name = options.nameOf(written.length);
    const handle = await fs.promises.open(filePath(root, jobId, name), 'w');
    const file = { name, handle, etag: newEtag(), lines: 0, bytes: 0, plain: 0 } as NonNullable<typeof current>;
    file.gzip = gzipWriter(async (bytes) => {
      file.bytes += bytes.length;
      await handle.write(bytes);
    });
    return file;
  }

  async function finish(): Promise<void> {
    if (!current) return;
    const file = current;
    current = undefined;
    try {
      await file.gzip.close(); // not fsynced here: see syncFiles
    } finally {
      await file.handle.close();
    }
    written.push({ name: file.name, count: file.lines, bytes: file.bytes, plainBytes: file.plain, etag: file.etag });
  }

  async function put(bytes: Uint8Array, lines: number, owned = false): Promise<void> {
    if (bytes.length === 0) return;
    current ??= await open();
    current.lines += lines;
    current.plain += bytes.length;
    total += lines;
    await (owned ? current.gzip.writeOwned(bytes) : current.gzip.write(bytes));
    relieveMemory(); // the line writer's buffers before these are garbage now (src/memory.ts)
  }

  async function write(chunk: Uint8Array, owned = false): Promise<void> {
    let from = 0;
    for (;;) {
      const room = options.maxLines - (current?.lines ?? 0);
      // find the room-th newline from `from`, or count those there are
      let at = from;
      let seen = 0;
      while (seen < room) {
        const nl = chunk.indexOf(0x0a, at);
        if (nl < 0) break;
        seen++;
        at = nl + 1;
      }
      if (seen < room) return put(chunk.subarray(from), seen + 0, owned);
      await put(chunk.subarray(from, at), seen, owned);
      await finish();
      from = at;
      if (from >= chunk.length) return;
    }
  }

  return {
    get lines() { return total; },
    write,
    async writeLines(chunks, lines) {
      // the line writer knows its lines: no indexOf per line (about 0.02 s of the main thread per
      // 148 MB of small resources) unless a file ends inside these chunks
      if (lines < options.maxLines - (current?.lines ?? 0)) {
        let n = lines; // all in this file: counted once, with the first bytes
        for (const chunk of chunks) {
          if (chunk.length === 0) continue;
          await put(chunk, n, true);
          n = 0;
        }
        return;
      }
      for (const chunk of chunks) await write(chunk, true);
    },
    async close() {
      await finish();
      return written;
    },
  };
}

/**
 * fsyncs written files, before their names are committed to a manifest (a manifest must never
 * list a file a power loss could truncate). Apart from writing, so that an `$export` part gives
 * up its COPY slot before waiting on the disk (jobs/export-job.ts).
 */
export async function syncFiles(root: string, jobId: string, names: string[]): Promise<void> {
  for (const name of names) {
    const handle = await fs.promises.open(filePath(root, jobId, name), 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

/** Removes a job's folder (DELETE, expiry, a job whose row is gone). */
export async function removeJobFiles(root: string, jobId: string): Promise<void> {
  await fs.promises.rm(jobDir(root, jobId), { recursive: true, force: true });
}

/**
 * Removes the folders of jobs that no longer exist (a crash between row and folder removal).
 * The folders are listed BEFORE the jobs are read: a job's row is committed before its first
 * folder is made, so every folder listed belongs to a job the later read sees, unless that job is
 * gone. (Read the other way round, an export started between the two reads lost its folder.)
 */
export async function sweepJobFiles(root: string, jobIds: () => Promise<Set<string>>): Promise<void> {
  let names: string[];
  try {
    names = (await fs.promises.readdir(root)).filter((name) => JOB_ID.test(name));
  } catch {
    return;
  }
  if (names.length === 0) return;
  const keep = await jobIds();
  for (const name of names) if (!keep.has(name)) await removeJobFiles(root, name);
}

export interface ServeRequest {
  acceptEncoding?: string;
  range?: string;
  ifRange?: string;
  ifNoneMatch?: string;
}

export interface Served {
  status: number;
  headers: Record<string, string>;
  body: ReadableStream<Uint8Array> | null;
}

/**
 * One stored file as HTTP: 200, 206 (one range), 304 or 416. Ranges count bytes of the
 * representation sent: of the gzip when it goes with `Content-Encoding: gzip`, of the ndjson
 * otherwise (then the bytes before the range are decompressed and dropped).
 */
export function serveFile(root: string, jobId: string, file: WrittenFile, request: ServeRequest): Served {
  const gzip = acceptsGzip(request.acceptEncoding);
  const etag = gzip ? `"${file.etag}-gz"` : `"${file.etag}"`;
  const size = gzip ? file.bytes : file.plainBytes;
  const headers: Record<string, string> = {
    'Content-Type': 'application/fhir+ndjson',
    ETag: etag,
    'Accept-Ranges': 'bytes',
    Vary: 'Accept-Encoding',
    'Cache-Control': 'private, no-cache',
  };
  if (gzip) headers['Content-Encoding'] = 'gzip';
  if (request.ifNoneMatch && request.ifNoneMatch.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
    return { status: 304, headers, body: null };
  }
  let range = request.range && (!request.ifRange || request.ifRange.trim() === etag) ? parseRange(request.range, size) : undefined;
  if (range === 'unsatisfiable') {
    return { status: 416, headers: { ...headers, 'Content-Range': `bytes */${size}` }, body: null };
  }
  if (range === 'ignore') range = undefined;
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  const length = Math.max(0, end - start + 1);
  headers['Content-Length'] = String(length);
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  const stored = Bun.file(filePath(root, jobId, file.name));
  let body: ReadableStream<Uint8Array>;
  if (gzip) body = stored.slice(start, end + 1).stream();
  else body = slice(gunzipIfNeeded(stored.stream()), start, length);
  return { status: range ? 206 : 200, headers, body };
}

function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  return header.split(',').some((part) => {
    const [coding, ...rest] = part.trim().toLowerCase().split(';');
    const q = rest.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return (coding === 'gzip' || coding === '*') && (q === undefined || Number(q.slice(2)) > 0);
  });
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range); several ranges or another unit: ignored (200). */
function parseRange(header: string, size: number): { start: number; end: number } | 'unsatisfiable' | 'ignore' {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'ignore';
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

/** Bytes [start, start + length) of a stream, pulled as read. */
function slice(input: ReadableStream<Uint8Array>, start: number, length: number): ReadableStream<Uint8Array> {
  const reader = input.getReader();
  let skip = start;
  let left = length;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          if (left <= 0) {
            await reader.cancel().catch(() => {});
            return controller.close();
          }
          const { done, value } = await reader.read();
          if (done) return controller.close();
          let chunk = value;
          if (skip > 0) {
            if (chunk.length <= skip) { skip -= chunk.length; continue; }
            chunk = chunk.subarray(skip);
            skip = 0;
          }
          if (chunk.length > left) chunk = chunk.subarray(0, left);
          left -= chunk.length;
          controller.enqueue(chunk);
          return;
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
