/**
 * The other server's export an import session pulls (SPEC §13 `exportType: dynamic`), one row per
 * session in `bulkimport_pull`. Its lifecycle:
 *
 *   new → kicking-off (committed BEFORE the kick-off request is sent) → polling (the status URL,
 *   committed as soon as the kick-off answered 202) → listed (the manifest's files are inputs)
 *
 * A server that finds a pull `kicking-off` when it claims it cannot know whether the other server
 * started an export: it fails the session rather than kick off a second one.
 */
import type { AnySql, TransactionSql } from './db.ts';

/** The job kind of a pull (jobs/pull-job.ts), one job per session, in the session's group. */
export const IMPORT_PULL = 'import-pull';

export function pullJobKey(session: string): string {
  return `${IMPORT_PULL}:${session}`;
}

export type PullState = 'new' | 'kicking-off' | 'polling' | 'listed';

/** Kick-off parameters passed through to the other server (SPEC §13). */
export interface KickoffParams {
  /** name → values, in the order given (`_typeFilter` may repeat). */
  params: [string, string][];
}

export interface PullRow {
  exportUrl: string;
  sourceKey: string;
  kickoff: KickoffParams;
  /** The `_since` sent, if any (an explicit instant, or the transactionTime `latest` stood for). */
  since: string | null;
  state: PullState;
  statusUrl: string | null;
  kickoffs: number;
  remoteProgress: string | null;
  transactionTime: string | null;
  requiresAccessToken: boolean | null;
}

const COLUMNS = `export_url as "exportUrl", source_key as "sourceKey", kickoff, since, state, status_url as "statusUrl",
  kickoffs, remote_progress as "remoteProgress", transaction_time as "transactionTime", requires_access_token as "requiresAccessToken"`;

export async function insertPull(
  tx: TransactionSql,
  id: string,
  pull: { exportUrl: string; sourceKey: string; kickoff: KickoffParams; since?: string },
): Promise<void> {
  await tx`insert into bulkimport_pull (session_id, export_url, source_key, kickoff, since)
    values (${id}, ${pull.exportUrl}, ${pull.sourceKey}, ${tx.json(pull.kickoff as never)}, ${pull.since ?? null})`;
}

export async function readPull(sql: AnySql, id: string): Promise<PullRow | undefined> {
  const [row] = await sql<PullRow[]>`select ${sql.unsafe(COLUMNS)} from bulkimport_pull where session_id = ${id}`;
  return row;
}

/** The pull row, locked until `tx` ends: one kick-off at a time, whatever claims the job. */
export async function lockPull(tx: TransactionSql, id: string): Promise<PullRow | undefined> {
  const [row] = await tx<PullRow[]>`select ${tx.unsafe(COLUMNS)} from bulkimport_pull where session_id = ${id} for update`;
  return row;
}

/** Recorded (and committed) before the kick-off request leaves: `kicking-off`, one more kick-off. */
export async function markKickingOff(tx: TransactionSql, id: string): Promise<void> {
  await tx`update bulkimport_pull set state = 'kicking-off', kickoffs = kickoffs + 1, kicked_off_at = now() where session_id = ${id}`;
}

/** The other server answered the kick-off without starting an export (an HTTP refusal): `new` again. */
export async function markNotStarted(tx: TransactionSql, id: string): Promise<void> {
  await tx`update bulkimport_pull set state = 'new' where session_id = ${id} and state = 'kicking-off'`;
}

export async function recordStatusUrl(tx: TransactionSql, id: string, statusUrl: string): Promise<void> {
  await tx`update bulkimport_pull set state = 'polling', status_url = ${statusUrl} where session_id = ${id}`;
}

export async function recordRemoteProgress(sql: AnySql, id: string, progress: string): Promise<void> {
  await sql`update bulkimport_pull set remote_progress = ${progress} where session_id = ${id}`;
}

export async function markListed(
  tx: TransactionSql,
  id: string,
  manifest: { transactionTime?: string; requiresAccessToken: boolean },
): Promise<void> {
  await tx`update bulkimport_pull set state = 'listed', listed_at = now(), transaction_time = ${manifest.transactionTime ?? null},
    requires_access_token = ${manifest.requiresAccessToken} where session_id = ${id}`;
}

/** True while the session's pull has not listed its files yet: the session cannot be done. */
export async function pullPending(sql: AnySql, id: string): Promise<boolean> {
  const [row] = await sql`select 1 from bulkimport_pull where session_id = ${id} and state <> 'listed'`;
  return row !== undefined;
}

/**
 * The source's `transactionTime` of the last pull from `sourceKey` whose session is `done`
 * (SPEC §13 `_since: latest`), latest first.
 */
export async function lastPulledTransactionTime(sql: AnySql, sourceKey: string): Promise<string | undefined> {
  const [row] = await sql<{ transactionTime: string }[]>`
    select p.transaction_time as "transactionTime" from bulkimport_pull p join bulkimportstatus s on s.id = p.session_id
    where p.source_key = ${sourceKey} and p.transaction_time is not null and s.resource->>'status' = 'done'
    order by p.transaction_time::timestamptz desc limit 1`;
  return row?.transactionTime;
}
