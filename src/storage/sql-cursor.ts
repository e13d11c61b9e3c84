/**
 * A user's SQL as a read-only cursor, for `POST /$dump-sql` (SPEC §6).
 *
 * Safety comes from PostgreSQL, not from inspecting the text:
 * - `BEGIN READ ONLY`: anything that writes fails (INSERT/UPDATE/DELETE, nextval, FOR UPDATE …).
 * - the query goes in as `DECLARE … CURSOR FOR <query>` in ONE extended-protocol Parse message.
 *   The grammar only admits a SELECT/VALUES/TABLE/WITH-select there (so no COPY … TO PROGRAM, no
 *   DDL), PostgreSQL refuses data-modifying WITH in a cursor, and Parse refuses more than one
 *   statement, so `select 1) to stdout; commit; drop table patient; --` is a syntax error that
 *   runs nothing. (postgres.js sends `unsafe()` without parameters over the simple protocol,
 *   which would run every statement: `simple: false` is essential.)
 * - `SET LOCAL ROLE fhirhose_sql` when the server has that role (sql-reader.ts): the query may
 *   read resource tables and nothing else, and call no superuser-only function.
 * - `SET LOCAL statement_timeout` bounds every FETCH; the transaction is always rolled back, which
 *   also undoes any `set_config(…, false)`; session advisory locks are released on the way out.
 *
 * Values come back as PostgreSQL's text output (postgres.js `raw()`), so formats can write
 * exactly what the database holds.
 */
import { connectionLost, type Sql } from './db.ts';
import { backendKey, cancelBackend, EXTENDED_PROTOCOL, type BackendKey } from './postgres-internals.ts';

export interface CursorColumn {
  name: string;
  /** PostgreSQL type OID */
  type: number;
}

/** One row: each column's text output bytes, or null. */
export type RawRow = (Buffer | null)[];

export interface SqlCursor {
  columns: CursorColumn[];
  /** The next rows, up to about 1 MB of them; an empty array once the query is exhausted. */
  next(): Promise<RawRow[]>;
  /** Cancels a running FETCH, rolls back, releases the connection. Idempotent. */
  close(): Promise<void>;
}

const CURSOR = 'fhirhose_dump_sql';
const TARGET_BATCH_BYTES = 1 << 20;

/** Declares the cursor and fetches the first rows, so any error of the query surfaces here. */
export async function openReadOnlyCursor(sql: Sql, query: string, options: { timeoutMs: number; role?: string }): Promise<{ cursor: SqlCursor; first: RawRow[] }> {
  const conn = await sql.reserve();
  let closed = false;
  let inFlight: Promise<unknown> | undefined;
  let key: BackendKey | undefined;
  // rows per FETCH: few at first (a fast first byte, and at most 10 rows of the largest size the
  // pool lets through: FHIRHOSE_SQL_MAX_VALUE_BYTES), then sized to ~1 MB by the largest row seen
  let batch = 10;
  let largest = 1;
  let exhausted = false;
  // The connection died under a FETCH (a standby restarted, the database went away): nothing more
  // is sent on it. A ROLLBACK there would wait for postgres.js to reconnect to a server that may
  // still be starting, and the client's body would hang instead of failing
  // (tests/operations/bulk-reader.test.ts, standby restarted mid-$dump-sql).
  let lost = false;

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    // Only a running FETCH is cancelled (the reserved connection guarantees it is ours).
    if (inFlight && key) await cancelBackend(sql, key).catch(() => {});
    await inFlight?.catch(() => {});
    if (lost) return; // postgres.js has it in its closed list already (see copy-out.ts)
    try {
      await conn.unsafe('rollback').catch(() => conn.unsafe('rollback')); // a late cancel may hit the first
      await conn.unsafe('select pg_advisory_unlock_all()');
      conn.release();
    } catch {
      // the connection died: postgres.js has it in its closed list already (see copy-out.ts)
    }
  }

  async function fetch(): Promise<{ rows: RawRow[]; columns: CursorColumn[] }> {
    const step = conn.unsafe(`fetch forward ${batch} from ${CURSOR}`, [], EXTENDED_PROTOCOL).raw();
    inFlight = step;
    const result = await step
      .catch((err: unknown) => {
        if (connectionLost(err)) lost = true;
        throw err;
      })
      .finally(() => { inFlight = undefined; });
    const rows = result as unknown as RawRow[];
    if (rows.length < batch) exhausted = true;
    for (const row of rows) {
      let bytes = 0;
      for (const value of row) bytes += value === null ? 1 : value.length + 1;
      if (bytes > largest) largest = bytes;
    }
    if (rows.length > 0) batch = Math.max(1, Math.min(50_000, batch * 4, Math.floor(TARGET_BATCH_BYTES / largest)));
    return { rows, columns: (result.columns ?? []).map((c) => ({ name: c.name, type: c.type })) };
  }

  try {
    await conn.unsafe('begin transaction read only');
    if (options.role !== undefined) await conn`set local role ${conn(options.role)}`;
    key = backendKey(await conn.unsafe(`set local statement_timeout = ${Math.trunc(options.timeoutMs)}`));
    await conn.unsafe(`declare ${CURSOR} no scroll cursor for ${query}`, [], EXTENDED_PROTOCOL);
    const first = await fetch();
    const cursor: SqlCursor = {
      columns: first.columns,
      async next() {
        if (closed || exhausted) return [];
        return (await fetch()).rows;
      },
      close,
    };
    return { cursor, first: first.rows };
  } catch (err) {
    await close();
    throw err;
  }
}
