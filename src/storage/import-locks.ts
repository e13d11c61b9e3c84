/**
 * Which process runs an `$import` session: the one holding its session-level advisory lock, all
 * taken on ONE reserved connection per server. PostgreSQL drops the locks with the connection, so
 * a server killed with SIGKILL frees its sessions the moment its socket closes, with no lease to
 * expire; a second server on the same database skips a locked session the way
 * `FOR UPDATE SKIP LOCKED` skips a claimed job row.
 *
 * The lock connection can die under us (a database restart, pg_terminate_backend): the next lock
 * call notices, takes a new connection and locks again the sessions this process was running; a
 * session another server took meanwhile is reported to `onLost`, so its task here stops.
 */
import { connectionLost, type Sql } from './db.ts';

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
const TRY_LOCK = `select pg_try_advisory_lock(${KEY}) as ok`;

export function sessionLocks(sql: Sql, onLost: (id: string) => void = () => {}): SessionLocks {
  const held = new Set<string>();
  let connection: Promise<Reserved> | undefined;

  /** A new lock connection, with the locks of the lost one taken again. */
  async function open(): Promise<Reserved> {
    const conn = await sql.reserve();
    for (const id of [...held]) {
      const [row] = await conn.unsafe(TRY_LOCK, [id]);
      if (row?.ok === true) continue;
      held.delete(id);
      onLost(id);
    }
    return conn;
  }

  /** Runs a lock statement; once more on a new connection when the old one is gone. */
  async function run(statement: string, id: string): Promise<{ ok?: unknown }[]> {
    for (let attempt = 0; ; attempt++) {
      const current = (connection ??= open().catch((err) => { connection = undefined; throw err; }));
      try {
        return await (await current).unsafe(statement, [id]);
      } catch (err) {
        if (attempt > 0 || !connectionLost(err)) throw err;
        // the dead connection stays with postgres.js's closed ones; releasing it would hand the
        // pool a connection we might still address
        if (connection === current) connection = undefined;
      }
    }
  }

  return {
    async tryLock(id) {
      const [row] = await run(TRY_LOCK, id);
      if (row?.ok === true) held.add(id);
      return row?.ok === true;
    },
    async unlock(id) {
      if (!held.delete(id)) return;
      await run(`select pg_advisory_unlock(${KEY})`, id);
    },
    async close() {
      const pending = connection;
      connection = undefined;
      if (pending) (await pending.catch(() => undefined))?.release();
    },
  };
}
