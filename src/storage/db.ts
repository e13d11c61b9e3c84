/**
 * The connection pool. `postgres` (postgres.js) is imported only under src/storage (STYLE §13);
 * other layers receive the `Sql` type re-exported here.
 */
import postgres from 'postgres';

export type Sql = postgres.Sql<{}>;
export type TransactionSql = postgres.TransactionSql<{}>;
export type AnySql = Sql | TransactionSql;

export function connect(url: string, options: { max?: number; applicationName?: string } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    idle_timeout: 60,
    connection: { application_name: options.applicationName ?? 'fhirhose', TimeZone: 'UTC' },
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

/** PostgreSQL's own message, for 400 answers about user SQL ($dump-sql). */
export function pgMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * While `tx` runs, a client that goes away (`signal` aborts) cancels its current statement, so a
 * long COPY or merge rolls back instead of committing for nobody. Returns the unregister function.
 */
export async function cancelOnAbort(tx: TransactionSql, pool: Sql, signal: AbortSignal | undefined): Promise<() => void> {
  if (!signal) return () => {};
  const [row] = await tx`select pg_backend_pid() as pid`;
  const pid = Number(row!.pid);
  const cancel = () => { pool`select pg_cancel_backend(${pid})`.catch(() => {}); };
  signal.addEventListener('abort', cancel, { once: true });
  return () => signal.removeEventListener('abort', cancel);
}
