/**
 * The one bridge between postgres.js `COPY … TO STDOUT` (a Node `Readable`) and web streams
 * (STYLE §7). Everything above this module sees a pull-based `ReadableStream<Uint8Array>`:
 * - `pull()` takes whatever the Node stream has buffered, so the client's pace drives the socket:
 *   postgres.js pauses the socket when its buffer is full and resumes it when we read, and
 *   PostgreSQL waits in ClientWrite meanwhile (SPEC §5).
 * - `cancel()` (client gone) cancels the backend's statement (a CancelRequest of its own, no pooled
 *   connection needed) and drains what is still in flight, so the backend sees the cancel and the
 *   connection returns to the pool (SPEC §5: within 1 s).
 * - a database failure mid-stream errors the web stream, so the HTTP body is aborted.
 */
import type { Readable } from 'node:stream';
import { connectionLost, type Sql } from './db.ts';
import { backendKey, cancelBackend, markFramedCopy, resumeSocket, setReadBuffer, type BackendKey } from './postgres-internals.ts';

/**
 * Bigger than postgres.js's default of 16 KiB (a socket pause/resume every ~5 Synthea Patients);
 * 1 MiB keeps memory flat (one or two buffers per dump) and lets one pull take hundreds of rows.
 */
const BUFFER_BYTES = 1 << 20;

export type Reserved = Awaited<ReturnType<Sql['reserve']>>;

/** A connection taken out of the pool for one stream. */
export interface StreamConnection {
  conn: Reserved;
  /** A transaction is open on it: roll back before the connection goes back to the pool. */
  inTransaction: boolean;
}

/**
 * Reserved, not pooled: a cancel aimed at this backend can never hit another request's query.
 * `begin` (e.g. `begin read only`) opens a transaction that lasts until the stream is done.
 */
export async function reserveConnection(sql: Sql, begin?: string): Promise<StreamConnection> {
  const conn = await sql.reserve();
  try {
    if (begin) await conn.unsafe(begin); // last: SET TRANSACTION SNAPSHOT may follow it
    return { conn, inTransaction: !!begin };
  } catch (err) {
    release({ conn, inTransaction: !!begin }, err);
    throw err;
  }
}

/**
 * Back to the pool (after a rollback when a transaction is open), unless the connection died: then
 * postgres.js has moved it to its closed list already, and releasing it would put a socketless
 * connection in the open list; the next query on it throws inside postgres.js (seen here:
 * `null is not an object (evaluating 'socket.write')` after pg_terminate_backend).
 */
export function release(c: StreamConnection, err?: unknown): void {
  if (connectionLost(err)) return;
  if (!c.inTransaction) return c.conn.release();
  // A cancel that reached the backend just as its COPY ended can fail this ROLLBACK (57014) and
  // leave the transaction open and aborted; released so, every later query on the connection
  // failed with 25P02 (seen in CI). A signal is consumed once: the second ROLLBACK goes through.
  const rollback = () => c.conn.unsafe('rollback');
  rollback()
    .catch((e: unknown) => (connectionLost(e) ? Promise.reject(e) : rollback()))
    .then(() => c.conn.release(), (e: unknown) => release({ ...c, inTransaction: false }, e));
}

export interface CopyOutOptions {
  /** Default: a connection reserved for this stream. */
  connection?: StreamConnection;
  /**
   * Hand out every chunk in one reused 1 MiB buffer: a chunk is valid only until the next read.
   * Also takes the rows from postgres.js in runs of whole CopyData messages (patches/postgres.mjs (4)).
   * For a consumer that is done with a chunk before it reads again ($dump's decoder): Bun's
   * `read(length)`, which concatenates into a fresh buffer, cost 210–370 ms per 200,000 Synthea
   * rows in a micro-benchmark, a loop of `read()` copying into one buffer 24–81 ms.
   */
  reuseBuffer?: boolean;
}

/**
 * Starts `statement` (a `COPY … TO STDOUT`) and resolves once PostgreSQL has accepted it: a
 * failing statement rejects here, before any response byte. The connection is released when the
 * stream ends, fails or is cancelled.
 */
export async function copyOut(sql: Sql, statement: string, options: CopyOutOptions = {}): Promise<ReadableStream<Uint8Array>> {
  const c = options.connection ?? (await reserveConnection(sql));
  let node: Readable;
  let key: BackendKey; // whose statement a cancel stops: the COPY's backend, known once it is sent
  try {
    const copy = c.conn.unsafe(statement);
    if (options.reuseBuffer) markFramedCopy(copy); // runs of whole CopyData messages, not one push per row
    node = (await copy.readable()) as Readable;
    key = backendKey(copy);
  } catch (err) {
    release(c, err);
    throw err;
  }
  setReadBuffer(node, BUFFER_BYTES);

  let failure: unknown;
  let finished = false;
  let released = false;
  /** The cancel request of cancel(), while on its way. */
  let cancelling: Promise<unknown> | undefined;
  const settle = (err?: unknown) => {
    if (released) return;
    released = true;
    resumeSocket(node);
    // Not back to the pool before a cancel sent for this COPY has reached the backend: a COPY that
    // ended on its own meanwhile would otherwise take the signal into its ROLLBACK, or hand it to
    // the next query on the connection. Once the cancel request is done, the backend has the
    // signal and drops it when idle.
    if (cancelling) void cancelling.then(() => release(c, err));
    else release(c, err);
  };
  node.once('error', (err) => { failure = err; settle(err); });
  node.once('end', () => { finished = true; settle(); });
  node.once('close', () => settle());

  const target = options.reuseBuffer ? Buffer.allocUnsafe(BUFFER_BYTES) : undefined;
  let carry: Buffer | null = null;
  /**
   * Unframes buffered CopyData messages into `into` until it is full; a run of messages bigger than
   * it goes out in a buffer of its own. Each Node chunk is a run of whole messages (see above).
   */
  // Framed unless postgres.js lacks the patch (a node_modules installed without its postinstall):
  // then the chunks are the payloads, and a binary COPY's first one starts with its signature.
  let framed: boolean | undefined;
  const gather = (into: Buffer): Buffer | null => {
    let size = 0;
    for (;;) {
      const next = carry ?? (node.read() as Buffer | null);
      carry = null;
      if (next === null) break;
      framed ??= next[0] === 0x64;
      if (size + next.length > into.length) { // the payloads are shorter than the messages
        if (size > 0) { carry = next; break; }
        if (!framed) return next;
        const own = Buffer.allocUnsafe(next.length);
        return own.subarray(0, unframe(next, own, 0));
      }
      size = framed ? unframe(next, into, size) : size + next.copy(into, size);
    }
    return size === 0 ? null : into.subarray(0, size);
  };

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          if (failure !== undefined) throw failure;
          // Everything buffered, in one chunk: Bun's read() without a size returns one pushed chunk,
          // and postgres.js pushes one per row (100,001 pulls for 100,000 demo rows otherwise).
          const chunk = target ? gather(target) : (node.readableLength > 0 ? node.read(node.readableLength) : node.read()) as Buffer | null;
          if (chunk !== null) return controller.enqueue(chunk);
          if (carry === null && (finished || node.readableEnded)) return controller.close();
          await nextEvent(node);
        }
      },
      async cancel() {
        if (released) return;
        node.on('error', () => {});
        node.on('data', () => {}); // flowing: discard the rows already on their way
        cancelling = cancelBackend(sql, key).catch(() => {});
        await cancelling;
      },
    },
    { highWaterMark: 0 },
  );
}

/**
 * Copies the payloads of the CopyData messages in `frames` (whole messages: `d`, int32 length
 * counting itself, payload) into `into` from `at`; returns where they end.
 */
export function unframe(frames: Buffer, into: Buffer, at: number): number {
  let pos = 0;
  while (pos < frames.length) {
    if (frames[pos] !== 0x64) throw new Error(`COPY stream: expected a CopyData message, got byte ${frames[pos]}`);
    const end = pos + 1 + frames.readUInt32BE(pos + 1);
    at += frames.copy(into, at, pos + 5, end);
    pos = end;
  }
  return at;
}

function nextEvent(node: Readable): Promise<void> {
  return new Promise((resolve) => {
    const events = ['readable', 'end', 'error', 'close'] as const;
    const done = () => {
      for (const e of events) node.off(e, done);
      resolve();
    };
    for (const e of events) node.on(e, done);
  });
}
