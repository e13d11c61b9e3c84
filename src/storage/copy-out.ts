/**
 * The one bridge between postgres.js `COPY … TO STDOUT` (a Node `Readable`) and web streams
 * (STYLE §7). Everything above this module sees a pull-based `ReadableStream<Uint8Array>`:
 * - `pull()` takes whatever the Node stream has buffered, so the client's pace drives the socket: postgres.js pauses the socket when its buffer is full and
 *   resumes it when we read, and PostgreSQL waits in ClientWrite meanwhile (SPEC §5).
 * - `cancel()` (client gone) cancels the backend's statement and drains what is still in flight,
 *   so the backend sees the cancel and the connection returns to the pool (SPEC §5: within 1 s).
 * - a database failure mid-stream errors the web stream, so the HTTP body is aborted.
 */
import type { Readable } from 'node:stream';
import type { Sql } from './db.ts';

/**
 * Bigger than postgres.js's default of 16 KiB (a socket pause/resume every ~5 Synthea Patients);
 * 1 MiB keeps memory flat (one buffer per dump) and lets one `read()` take hundreds of rows.
 */
const BUFFER_BYTES = 1 << 20;

/**
 * Starts `statement` (a `COPY … TO STDOUT`) on a connection reserved for the stream, and resolves
 * once PostgreSQL has accepted it: a failing statement rejects here, before any response byte.
 */
export async function copyOut(sql: Sql, statement: string): Promise<ReadableStream<Uint8Array>> {
  // Reserved, not pooled: a cancel aimed at this backend can then never hit another request's query.
  const conn = await sql.reserve();
  let node: Readable;
  let pid: number;
  try {
    const [row] = await conn`select pg_backend_pid() as pid`;
    pid = Number(row!.pid);
    node = (await conn.unsafe(statement).readable()) as Readable;
  } catch (err) {
    conn.release();
    throw err;
  }
  const state = (node as unknown as { _readableState?: { highWaterMark: number } })._readableState;
  if (state) state.highWaterMark = BUFFER_BYTES;

  let failure: unknown;
  let finished = false;
  let released = false;
  const settle = (err?: unknown) => {
    if (released) return;
    released = true;
    resumeSocket(node);
    // A connection that died is already back in postgres.js's closed list; releasing it would move
    // it to the open list with no socket, and the next query on it throws inside postgres.js
    // (seen here: `null is not an object (evaluating 'socket.write')` after pg_terminate_backend).
    if (!connectionLost(err)) conn.release();
  };
  node.once('error', (err) => { failure = err; settle(err); });
  node.once('end', () => { finished = true; settle(); });
  node.once('close', () => settle());

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          if (failure !== undefined) throw failure;
          // read(length): everything buffered in one Buffer. Bun's read() without a size returns one
          // pushed chunk, and postgres.js pushes one per row: 100,001 pulls for 100,000 demo rows.
          const chunk = (node.readableLength > 0 ? node.read(node.readableLength) : node.read()) as Buffer | null;
          if (chunk !== null) return controller.enqueue(chunk);
          if (finished || node.readableEnded) return controller.close();
          await nextEvent(node);
        }
      },
      async cancel() {
        if (released) return;
        node.on('error', () => {});
        node.on('data', () => {}); // flowing: discard the rows already on their way
        await sql`select pg_cancel_backend(${pid})`.catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}

function connectionLost(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, severity } = err as { code?: unknown; severity?: unknown };
  return (typeof code === 'string' && code.startsWith('CONNECTION_')) || severity === 'FATAL' || severity === 'PANIC';
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

/**
 * postgres.js 3.4.9 pauses the socket when a CopyData push fills the stream's buffer, and resumes
 * it only from the stream's `_read`. When CopyDone (or an error) arrives in the same socket chunk,
 * the stream ends with the socket still paused and the next query on that connection hangs for
 * ever (porsager/postgres#499, fix proposed in #1016). Seen here: the third of six back-to-back
 * 200k-row COPYs hung in ClientWrite; with this call after each, six of six completed.
 */
function resumeSocket(node: Readable): void {
  try {
    (node as unknown as { _read(size: number): void })._read(0);
  } catch {
    // the connection is closed already: nothing to resume
  }
}
