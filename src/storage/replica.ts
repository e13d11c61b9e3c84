/**
 * The read replica of `FHIRHOSE_READ_URL` (SPEC §11): a hot standby that bulk reads use so they
 * never load the primary. Only positions in the WAL are asked here; the reads themselves are the
 * ordinary dump and cursor SQL, run on the replica's pool.
 */
import { connect, type Sql } from './db.ts';

export interface ReadReplica {
  sql: Sql;
  /** How long a read waits for the standby to replay what the primary had flushed. */
  maxLagMs: number;
  /**
   * A single-connection client on the standby for one `$dump-sql` cursor, bounded per row like the
   * primary's (storage/pools.ts `sqlReader`): the bound is postgres.js's, counted on the bytes as
   * they arrive, so it needs nothing created on the standby, where nothing can be. `end()` it after.
   */
  sqlReader(): Sql;
}

export function openReplica(url: string, options: { poolSize: number; maxLagMs: number; sqlMaxValueBytes: number }): ReadReplica {
  // a standby that is unreachable should be a quick 503, not postgres.js's default 30 s connect wait
  const settings = { applicationName: 'fhirhose-read', connectTimeoutS: 5 };
  return {
    sql: connect(url, { ...settings, max: options.poolSize }),
    maxLagMs: options.maxLagMs,
    sqlReader: () => connect(url, { ...settings, max: 1, maxMessageBytes: options.sqlMaxValueBytes }),
  };
}

/**
 * The primary's WAL flush position: every transaction committed (and answered) before this call
 * lies at or below it. `pg_current_wal_flush_lsn`, not `_lsn`: the latter may point at WAL not yet
 * flushed, which a standby cannot have received.
 */
export async function primaryPosition(primary: Sql): Promise<string> {
  const [row] = await primary`select pg_current_wal_flush_lsn()::text as lsn`;
  return row!.lsn as string;
}

export interface ReplayState {
  /** Has the standby replayed WAL up to `target`? A server not in recovery counts as caught up. */
  caughtUp: boolean;
  /** What it has replayed (null when it is not a standby). */
  replayed: string | null;
}

export async function replayState(replica: Sql, target: string): Promise<ReplayState> {
  const [row] = await replica`
    select pg_last_wal_replay_lsn()::text as replayed,
           not pg_is_in_recovery() or coalesce(pg_last_wal_replay_lsn() >= ${target}::pg_lsn, false) as caught_up`;
  return { caughtUp: Boolean(row!.caught_up), replayed: (row!.replayed as string | null) ?? null };
}
