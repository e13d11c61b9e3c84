/**
 * Every use of postgres.js beyond its documented API, in one module. fhirhose needs four things
 * postgres.js has but does not publish; each is read here and nowhere else:
 *
 * - a query's and a result's `state`: the BackendKeyData (pid, secret) of the backend that ran it,
 *   the key a CancelRequest needs (copy-out.ts, sql-cursor.ts cancel their own backend's statement);
 * - a query's `canceller`: postgres.js's CancelRequest on a socket of its own, whose promise
 *   `query.cancel()` drops (we must wait for it, see cancelBackend);
 * - the Node `Readable` of `COPY … TO STDOUT`: its `_readableState.highWaterMark` (16 KiB is too
 *   small, copy-out.ts) and its `_read`, which resumes the paused socket (porsager/postgres#499);
 * - `unsafe(text, [], { simple: false })`: a parameterless statement over the extended protocol,
 *   so PostgreSQL refuses a second statement ($dump-sql's safety, sql-cursor.ts). Honoured by
 *   postgres.js, absent from its types.
 * - a query's `fhirhoseFrames` mark, which patches/postgres.mjs (4) adds: the COPY stream of a
 *   marked query gets runs of whole CopyData messages, framed, one push per socket chunk ($dump,
 *   copy-out.ts, which also reads an unpatched postgres.js's per-row chunks, only slower).
 *
 * package.json pins postgres.js to the version these were read from, and `checkPostgresInternals`
 * runs at start-up: a postgres.js without one of them, or without a fix of patches/postgres.mjs
 * (an install that skipped the postinstall script, a node_modules older than a new fix), stops the
 * server with a message naming the installed version, instead of a cancel, a $dump-sql check or a
 * dead connection silently misbehaving.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import type postgres from 'postgres';
import type { AnySql, Sql } from './db.ts';

/** The version the reach-ins below were read from (and package.json pins). */
export const BUILT_FOR = '3.4.9';

/** What cancels a backend's statement: its pid and secret key (BackendKeyData). */
export interface BackendKey {
  pid: number;
  secret: number;
}

type Canceller = (query: { state: BackendKey; active: boolean }) => Promise<void>;

/** `unsafe()` options for one statement over the extended protocol, even without parameters. */
export const EXTENDED_PROTOCOL = { simple: false } as postgres.UnsafeQueryOptions;

/**
 * The key of the backend that ran a query: from its result, or from the query itself once sent.
 * Copied: postgres.js rewrites its object on reconnect.
 */
export function backendKey(queryOrResult: unknown): BackendKey {
  const state = (queryOrResult as { state?: { pid?: unknown; secret?: unknown } | null }).state;
  if (typeof state?.pid !== 'number' || typeof state.secret !== 'number') throw new Error('postgres.js gave no backend key with this query');
  return { pid: state.pid, secret: state.secret };
}

/**
 * Cancels the statement `key`'s backend is running, with PostgreSQL's CancelRequest on a socket of
 * its own. Unlike `select pg_cancel_backend(pid)`, it needs no pooled connection: the streams that
 * hold every connection of a busy pool can cancel their COPYs and wait for that before they release
 * (tests/operations/dump-pool.test.ts hung with pg_cancel_backend). Resolves once the server has
 * closed that socket, i.e. has signalled the backend: a running statement fails with 57014, an
 * idle backend drops the signal, so a query sent on its connection afterwards is safe from it.
 */
export function cancelBackend(sql: AnySql, key: BackendKey): Promise<void> {
  // a query object that is never run (queries run when awaited): only its canceller is taken
  const canceller = cancellerOf(sql`select 1`);
  if (!canceller) return Promise.reject(new Error('postgres.js has no canceller'));
  return canceller({ state: { ...key }, active: true });
}

/** Sets how much a COPY's Node stream buffers before postgres.js pauses the socket. */
export function setReadBuffer(node: Readable, bytes: number): void {
  const state = (node as unknown as { _readableState?: { highWaterMark: number } })._readableState;
  if (state) state.highWaterMark = bytes;
}

/**
 * postgres.js 3.4.9 pauses the socket when a CopyData push fills the stream's buffer, and resumes
 * it only from the stream's `_read`. When CopyDone (or an error) arrives in the same socket chunk,
 * the stream ends with the socket still paused and the next query on that connection hangs for
 * ever (porsager/postgres#499, fix proposed in #1016). Seen here: the third of six back-to-back
 * 200k-row COPYs hung in ClientWrite; with this call after each, six of six completed.
 */
export function resumeSocket(node: Readable): void {
  try {
    (node as unknown as { _read(size: number): void })._read(0);
  } catch {
    // the connection is closed already: nothing to resume
  }
}

/**
 * Marks a `COPY … TO STDOUT` query before it runs (patches/postgres.mjs (4)): its stream then gets
 * each run of complete CopyData messages of a socket chunk in one push, framed as they came
 * (`d`, int32 length counting itself, payload), instead of one push per row.
 */
export function markFramedCopy(query: unknown): void {
  (query as { fhirhoseFrames?: boolean }).fhirhoseFrames = true;
}

/** What the start-up check looked at: postgres.js objects, or a stand-in in a test. */
export interface InternalsSample {
  /** A query object, never run. */
  unsent: unknown;
  /** A query that has run, and its result. */
  sent: unknown;
  result: unknown;
  /** The Node stream of a `COPY … TO STDOUT`. */
  copyStream: unknown;
  /** Did `unsafe('select 1; select 2', [], EXTENDED_PROTOCOL)` fail with 42601 (one statement only)? */
  oneStatementOnly: boolean;
  /** The fixes of patches/postgres.mjs the installed postgres.js lacks, by number. */
  unpatched: number[];
}

/** The reach-ins `sample` lacks, each named as a maintainer would look for it; empty when none. */
export function missingInternals(sample: InternalsSample): string[] {
  const missing: string[] = [];
  if (!cancellerOf(sample.unsent)) missing.push('Query.canceller (a function)');
  if (!hasKey(sample.sent)) missing.push('Query.state.{pid,secret} once sent');
  if (!hasKey(sample.result)) missing.push('Result.state.{pid,secret}');
  const stream = sample.copyStream as { _readableState?: { highWaterMark?: unknown }; _read?: unknown } | null;
  if (typeof stream?._readableState?.highWaterMark !== 'number') missing.push("the COPY stream's _readableState.highWaterMark");
  if (typeof stream?._read !== 'function') missing.push("the COPY stream's _read (resumes the socket)");
  if (!sample.oneStatementOnly) missing.push("unsafe(…, [], { simple: false }) (the extended protocol: one statement only)");
  if (sample.unpatched.length > 0) {
    missing.push(`fix ${sample.unpatched.join(', ')} of patches/postgres.mjs (npm install or npm ci applies it: its postinstall script)`);
  }
  return missing;
}

/** Throws the start-up error when `sample` lacks anything fhirhose relies on. */
export function assertInternals(sample: InternalsSample, version = installedVersion()): void {
  const missing = missingInternals(sample);
  if (missing.length === 0) return;
  throw new Error(
    `postgres.js ${version} lacks what fhirhose relies on: ${missing.join('; ')}. ` +
      `fhirhose is built for postgres.js ${BUILT_FOR}: install that version (npm ci), or update src/storage/postgres-internals.ts`,
  );
}

/** The start-up check on a live pool: throws when anything fhirhose relies on is missing. */
export async function checkPostgresInternals(sql: Sql): Promise<void> {
  assertInternals(await sampleInternals(sql));
}

/** Takes the sample the check looks at: two queries and a one-row COPY on the pool. */
export async function sampleInternals(sql: Sql): Promise<InternalsSample> {
  const sent = sql`select 1 as one`;
  const result = await sent;
  const copyStream = (await sql.unsafe('copy (select 1) to stdout').readable()) as Readable;
  for await (const _ of copyStream) { /* drain: the connection goes back to the pool */ }
  const oneStatementOnly = await sql.unsafe('select 1; select 2', [], EXTENDED_PROTOCOL).then(
    () => false,
    (err: { code?: unknown }) => err?.code === '42601',
  );
  return { unsent: sql`select 1`, sent, result, copyStream, oneStatementOnly, unpatched: unpatchedFixes() };
}

/**
 * The fixes patches/postgres.mjs makes (each leaves the mark `// fhirhose patches/postgres.mjs (n)`
 * in the file it fixes) that the postgres.js Bun loads lacks. None when the script is not shipped.
 */
export function unpatchedFixes(): number[] {
  const script = path.join(import.meta.dir, '..', '..', 'patches', 'postgres.mjs');
  if (!fs.existsSync(script)) return [];
  const numbers = (text: string, pattern: RegExp) => new Set([...text.matchAll(pattern)].map((m) => Number(m[1])));
  const expected = numbers(fs.readFileSync(script, 'utf8'), /\$\{MARK\} \((\d+)\)/g);
  const dir = path.dirname(fileURLToPath(import.meta.resolve('postgres')));
  const installed = ['connection.js', 'index.js'].map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n');
  const found = numbers(installed, /fhirhose patches\/postgres\.mjs \((\d+)\)/g);
  return [...expected].filter((n) => !found.has(n)).sort((a, b) => a - b);
}

/** The version of the postgres.js that is installed (its package.json, beside its entry point). */
export function installedVersion(): string {
  try {
    let dir = path.dirname(fileURLToPath(import.meta.resolve('postgres')));
    for (; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
      const file = path.join(dir, 'package.json');
      if (!fs.existsSync(file)) continue;
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'postgres') return pkg.version ?? 'unknown';
    }
  } catch {
    // fall through
  }
  return 'unknown';
}

function cancellerOf(query: unknown): Canceller | undefined {
  const canceller = (query as { canceller?: unknown } | null)?.canceller;
  return typeof canceller === 'function' ? (canceller as Canceller) : undefined;
}

function hasKey(queryOrResult: unknown): boolean {
  try {
    backendKey(queryOrResult);
    return true;
  } catch {
    return false;
  }
}
