/**
 * Which process runs an `$import` session: the one holding its session-level advisory lock, all
 * taken on ONE reserved connection per server. PostgreSQL drops the locks with the connection, so
 * a server killed with SIGKILL frees its sessions the moment its socket closes, with no lease to
 * expire; a second server on the same database skips a locked session the way
 * `FOR UPDATE SKIP LOCKED` skips a claimed job row.
 */
import type { Sql } from './db.ts';

type Reserved = Awaited<ReturnType<Sql['reserve']>>;

export interface SessionLocks {
  /** true when this process now holds the session (locks are re-entrant within it). */
  tryLock(id: string): Promise<boolean>;
  unlock(id: string): Promise<void>;
  /** Gives the connection back to the pool; call once every lock is released. */
  close(): Promise<void>;
}

// 64 bits of md5: two session ids collide with negligible probability, and a collision would only
// make one session wait for the other, never run twice.
const KEY = `('x' || substr(md5('fhirhose-import:' || $1), 1, 16))::bit(64)::bigint`;

export function sessionLocks(sql: Sql): SessionLocks {
  let connection: Promise<Reserved> | undefined;
  const conn = () => (connection ??= sql.reserve());
  return {
    async tryLock(id) {
      const [row] = await (await conn()).unsafe(`select pg_try_advisory_lock(${KEY}) as ok`, [id]);
      return row?.ok === true;
    },
    async unlock(id) {
      await (await conn()).unsafe(`select pg_advisory_unlock(${KEY})`, [id]);
    },
    async close() {
      const pending = connection;
      connection = undefined;
      if (pending) (await pending).release();
    },
  };
}
