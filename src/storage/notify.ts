/**
 * Fan-out between the servers that share one database (SPEC §11): `LISTEN/NOTIFY` on a few fixed
 * channels. postgres.js keeps one dedicated connection for all of a pool's listens and re-LISTENs
 * after it reconnects; `onListen` runs after every (re)subscription, so a subscriber can re-read
 * what it may have missed while the connection was down. A lost notification is covered by each
 * subscriber's own periodic poll: NOTIFY is a wake-up, never the only carrier of a fact.
 */
import type { AnySql, Sql } from './db.ts';

/** The channels in use; a closed vocabulary so a typo is a type error. */
export type Channel =
  | 'fhirhose_jobs' // new or changed claimable work: payload = job kind or id
  | 'fhirhose_actions' // pause/abort/resume of a session or job: payload = its id
  | 'fhirhose_progress' // an import batch committed, or an export moved (console live view): payload = the session id, or export:<id>
  | 'fhirhose_auth'; // a Client or AccessPolicy changed: payload = the resource type

/** Written by a trigger on the client and accesspolicy tables (migration 4). */
export const AUTH_CHANNEL: Channel = 'fhirhose_auth';

export interface Subscription {
  unlisten(): Promise<void>;
}

/** Calls `onMessage` for every notification on `channel` (from any server, this one included). */
export async function subscribe(
  sql: Sql,
  channel: Channel,
  onMessage: (payload: string) => void,
  options: { onListen?: () => void } = {},
): Promise<Subscription> {
  const { unlisten } = await sql.listen(channel, onMessage, options.onListen);
  return { unlisten };
}

/**
 * Sends `payload` on `channel`. Inside a transaction the notification is delivered at commit (and
 * dropped on rollback), which is what a state change wants: listeners never see an uncommitted row.
 */
export async function publish(sql: AnySql, channel: Channel, payload = ''): Promise<void> {
  await sql`select pg_notify(${channel}, ${payload})`;
}
