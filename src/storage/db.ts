/**
 * The connection pool. `postgres` (postgres.js) is imported only under src/storage (STYLE §13);
 * other layers receive the `Sql` type re-exported here.
 */
import postgres from 'postgres';

export type Sql = postgres.Sql<{}>;
export type TransactionSql = postgres.TransactionSql<{}>;
export type AnySql = Sql | TransactionSql;

export function connect(
  url: string,
  options: { max?: number; applicationName?: string; connectTimeoutS?: number; settings?: Record<string, string | number> } = {},
): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    ...(options.connectTimeoutS === undefined ? {} : { connect_timeout: options.connectTimeoutS }),
    onnotice: () => {},
    idle_timeout: 60,
    connection: { application_name: options.applicationName ?? 'fhirhose', TimeZone: 'UTC', ...options.settings },
  });
}

/** Quote an SQL identifier ("group", "careplan"): SPEC §2 says identifiers are always quoted. */
export function ident(name: string): string {
  return '"' + name.replaceAll('"', '""') + '"';
}

/** Is PostgreSQL's error a unique violation, undefined table, syntax error …? (SQLSTATE) */
export function pgCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/**
 * Did the error end the connection (postgres.js CONNECTION_* codes, a FATAL or PANIC from the
 * server)? Such a connection is with postgres.js's closed ones already: never release or reuse it.
 */
export function connectionLost(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, severity } = err as { code?: unknown; severity?: unknown };
  return (typeof code === 'string' && code.startsWith('CONNECTION_')) || severity === 'FATAL' || severity === 'PANIC';
}

/** PostgreSQL's own message, for 400 answers about user SQL ($dump-sql). */
export function pgMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What cancels a backend's statement: its pid and secret key (BackendKeyData). */
export interface BackendKey {
  pid: number;
  secret: number;
}

/**
 * The key of the backend that ran a query: from its result, or from the query itself once sent
 * (postgres.js keeps it in `state`). Copied: postgres.js rewrites its object on reconnect.
 */
export function backendKey(result: unknown): BackendKey {
  const state = (result as { state?: { pid?: unknown; secret?: unknown } | null }).state;
  if (typeof state?.pid !== 'number' || typeof state.secret !== 'number') throw new Error('postgres.js gave no backend key with this result');
  return { pid: state.pid, secret: state.secret };
}

type Canceller = (query: { state: BackendKey; active: boolean }) => Promise<void>;

/**
 * Cancels the statement `key`'s backend is running, with PostgreSQL's CancelRequest on a socket of
 * its own (postgres.js's own canceller, which `query.cancel()` uses but whose promise it drops).
 * Unlike `select pg_cancel_backend(pid)`, it needs no pooled connection: the streams that hold
 * every connection of a busy pool can cancel their COPYs and wait for that before they release
 * (tests/operations/dump-pool.test.ts hung with pg_cancel_backend). Resolves once the server has
 * closed that socket, i.e. has signalled the backend: a running statement fails with 57014, an
 * idle backend drops the signal, so a query sent on its connection afterwards is safe from it.
 */
export function cancelBackend(sql: AnySql, key: BackendKey): Promise<void> {
  // a query object that is never run: only its canceller is taken (queries run when awaited)
  const { canceller } = sql`select 1` as unknown as { canceller?: Canceller };
  if (!canceller) return Promise.reject(new Error('postgres.js has no canceller'));
  return canceller({ state: { ...key }, active: true });
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
