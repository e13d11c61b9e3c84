/**
 * The connection pool. `postgres` (postgres.js) is imported only under src/storage (STYLE §13);
 * other layers receive the `Sql` type re-exported here.
 */
import postgres from 'postgres';
import { backendKey, cancelBackend } from './postgres-internals.ts';

export type Sql = postgres.Sql<{}>;
export type TransactionSql = postgres.TransactionSql<{}>;
export type AnySql = Sql | TransactionSql;

export function connect(
  url: string,
  options: {
    max?: number; applicationName?: string; connectTimeoutS?: number; settings?: Record<string, string | number>; maxMessageBytes?: number;
    /** Sees the text of every statement sent (tests/storage/citus-shapes.test.ts). */
    onQuery?: (text: string) => void;
    /** Told when a connection's socket has closed (tests/storage/pool.test.ts). */
    onClose?: (connectionId: number) => void;
  } = {},
): Sql {
  const onQuery = options.onQuery;
  return postgres(url, {
    max: options.max ?? 10,
    ...(onQuery ? { debug: (_connection: number, text: string) => onQuery(text) } : {}),
    ...(options.connectTimeoutS === undefined ? {} : { connect_timeout: options.connectTimeoutS }),
    // patches/postgres.mjs fix 3: a larger message from the server ends the connection (storage/pools.ts)
    ...(options.maxMessageBytes ? { max_message_bytes: options.maxMessageBytes } as object : {}),
    ...(options.onClose ? { onclose: options.onClose } : {}),
    onnotice: () => {},
    idle_timeout: 60,
    connection: { application_name: options.applicationName ?? 'fhirhose', TimeZone: 'UTC', ...options.settings },
  });
}

/**
 * Quote an SQL identifier ("group", "careplan"): SPEC §2 says identifiers are always quoted. For
 * statements built as text: a tagged statement takes `sql(name)` instead. Text is kept for the
 * statements on a load's own staging table (a name per load: as tagged, hence prepared, statements
 * they would leave a prepared statement per load on every pooled connection), for COPY and DDL,
 * and where the request decides the statement's shape.
 */
export function ident(name: string): string {
  return '"' + name.replaceAll('"', '""') + '"';
}

/** Is PostgreSQL's error a unique violation, undefined table, syntax error …? (SQLSTATE) */
export function pgCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/**
 * Socket errors of a connection that was up: the backend died (or the network dropped it) and the
 * kernel reset the connection instead of closing it cleanly. postgres.js rejects the query with the
 * socket's error as is: a query written after the backend exited but before the client had read
 * its close gets ECONNRESET (or EPIPE), one read after gets CONNECTION_CLOSED (patches/postgres.mjs
 * fix 2). Same event, so the same answer (tests/storage/pool.test.ts).
 */
const SOCKET_LOST = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT']);

/**
 * Did the error end the connection (postgres.js CONNECTION_* codes, a reset socket, a FATAL or
 * PANIC from the server)? Such a connection is with postgres.js's closed ones already: never
 * release or reuse it.
 */
export function connectionLost(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, severity } = err as { code?: unknown; severity?: unknown };
  return (typeof code === 'string' && (code.startsWith('CONNECTION_') || SOCKET_LOST.has(code))) || severity === 'FATAL' || severity === 'PANIC';
}

/** PostgreSQL's own message, for 400 answers about user SQL ($dump-sql). */
export function pgMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * While `tx` runs, a client that goes away (`signal` aborts) cancels its current statement, so a
 * long COPY or merge rolls back instead of committing for nobody. Returns the unregister function;
 * await it before the transaction ends: it waits for a cancel on its way, which could otherwise
 * land on the COMMIT/ROLLBACK (leaving an aborted transaction on a pooled connection) or on the
 * next query of whoever gets the connection.
 */
export async function cancelOnAbort(tx: TransactionSql, signal: AbortSignal | undefined): Promise<() => Promise<void>> {
  if (!signal) return async () => {};
  const key = backendKey(await tx`select pg_backend_pid()`);
  let sent: Promise<unknown> | undefined;
  const cancel = () => { sent = cancelBackend(tx, key).catch(() => {}); };
  signal.addEventListener('abort', cancel, { once: true });
  return async () => {
    signal.removeEventListener('abort', cancel);
    await sent;
  };
}
