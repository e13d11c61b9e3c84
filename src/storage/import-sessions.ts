/**
 * `$import` sessions as rows (SPEC §2, §8): the session itself is a `bulkimportstatus` row whose
 * `resource` holds its state; per-input progress and checkpoints are `bulkimport_input` rows; the
 * hashed secret sits in `bulkimport_secret`, so no read path of the resource table can show it.
 */
import type { AnySql, Sql, TransactionSql } from './db.ts';
import { LAST_UPDATED } from './resources.ts';
import { groupLeases, insertJob } from './jobs.ts';

/** Each input of a session is a job of this kind (SPEC §11), grouped by the session's id. */
export const IMPORT_INPUT = 'import-input';

/** What a job of kind `import-input` carries: the session and the input's index. */
export interface InputPayload {
  session: string;
  idx: number;
}

/** The job key of a session's input: unique, so an input is one job whatever happens. */
export function inputJobKey(session: string, idx: number): string {
  return `${IMPORT_INPUT}:${session}:${idx}`;
}

/** The session's own fields, stored in `bulkimportstatus.resource`. */
export interface SessionResource {
  status: 'active' | 'paused' | 'aborted' | 'error' | 'done';
  inputFormat: string;
  inputSource?: string;
  contentEncoding?: string;
  update: boolean;
  message?: string;
  startedAt: string;
  finishedAt?: string;
  /** Time spent `active` before `activeSince`; the rate divides by active time, not wall time. */
  activeMs: number;
  activeSince?: string;
  /** Every input's size was known at start (import-sizes.ts): progress is weighed by bytes. */
  sized?: boolean;
}

export interface SessionRow {
  id: string;
  txid: string;
  lastUpdated: string;
  resource: SessionResource;
  /** The other server's export this session pulls (`exportType: dynamic`), if it does. */
  pull: PullView | null;
}

export interface PullView {
  exportUrl: string;
  state: 'new' | 'kicking-off' | 'polling' | 'listed';
  since: string | null;
  remoteProgress: string | null;
  transactionTime: string | null;
  requiresAccessToken: boolean | null;
}

export interface InputRow {
  idx: number;
  type: string | null;
  url: string;
  storage: string;
  /** What the runner opens: an http(s) URL or a resolved absolute path. */
  source: string;
  status: string;
  checkpoint: number;
  linesRead: number;
  bytesRead: number;
  bytesTotal: number | null;
  imported: number;
  errorCount: number;
  errors: { line: number; message: string }[];
  message: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  runMs: number;
  /** The server running the input now and until when its lease holds (SPEC §11); none when idle. */
  owner?: string;
  leaseUntil?: string;
}

export interface NewInput {
  type?: string;
  url: string;
  storage: string;
  source: string;
  /** Asked at start (HEAD, file size) when it could be. */
  bytesTotal?: number;
}

const INSTANT = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
const INPUT_COLUMNS = `idx, type, url, storage, source, status, checkpoint::float8 as checkpoint,
  lines_read::float8 as "linesRead", bytes_read::float8 as "bytesRead", bytes_total::float8 as "bytesTotal",
  imported::float8 as imported, error_count::float8 as "errorCount", errors, message,
  ${INSTANT('started_at')} as "startedAt", ${INSTANT('finished_at')} as "finishedAt", run_ms::float8 as "runMs"`;
// A pull's public state (SPEC §13): never its status URL, which may be pre-signed.
const PULL = `(select jsonb_build_object('exportUrl', p.export_url, 'state', p.state, 'since', p.since, 'remoteProgress', p.remote_progress,
  'transactionTime', p.transaction_time, 'requiresAccessToken', p.requires_access_token) from bulkimport_pull p where p.session_id = bulkimportstatus.id) as pull`;
const SESSION_COLUMNS = `id, txid::text as txid, ${LAST_UPDATED} as "lastUpdated", resource, ${PULL}`;

/** Creates the session with its inputs; false when the id is taken (in any state). */
export async function insertSession(
  tx: TransactionSql,
  id: string,
  session: { resource: SessionResource; inputs: NewInput[]; secretHash?: string },
): Promise<boolean> {
  const created = await tx`
    insert into bulkimportstatus (id, txid, resource_type, status, resource)
    values (${id}, nextval('transaction_id_seq'), 'BulkImportStatus', 'created', ${session.resource as never})
    on conflict (id) do nothing returning id`;
  if (created.length === 0) return false;
  await insertInputs(tx, id, session.inputs);
  if (session.secretHash !== undefined) {
    await tx`insert into bulkimport_secret (session_id, hash) values (${id}, ${session.secretHash})`;
  }
  return true;
}

/** Adds inputs (and their jobs, claimable at once) after the session's last one: a pull's files. */
export async function insertInputs(tx: TransactionSql, id: string, inputs: NewInput[]): Promise<void> {
  const [row] = await tx`select coalesce(max(idx) + 1, 0)::int as next from bulkimport_input where session_id = ${id}`;
  const first = row!.next as number;
  for (const [i, input] of inputs.entries()) {
    const idx = first + i;
    await tx`insert into bulkimport_input (session_id, idx, type, url, storage, source, bytes_total)
             values (${id}, ${idx}, ${input.type ?? null}, ${input.url}, ${input.storage}, ${input.source}, ${input.bytesTotal ?? null})`;
    const payload: InputPayload = { session: id, idx };
    await insertJob(tx, { kind: IMPORT_INPUT, key: inputJobKey(id, idx), grp: id, payload: { ...payload } });
  }
}

export async function readSession(sql: AnySql, id: string): Promise<{ session: SessionRow; inputs: InputRow[] } | undefined> {
  const [session] = await sql<SessionRow[]>`select ${sql.unsafe(SESSION_COLUMNS)} from bulkimportstatus where id = ${id}`;
  if (!session) return undefined;
  const inputs = await sql<InputRow[]>`select ${sql.unsafe(INPUT_COLUMNS)} from bulkimport_input where session_id = ${id} order by idx`;
  return { session, inputs: withLeases(id, inputs, await groupLeases(sql, id)) };
}

function withLeases(id: string, inputs: InputRow[], leases: Map<string, { owner: string; leaseUntil: string }>): InputRow[] {
  if (leases.size === 0) return inputs;
  return inputs.map((input) => {
    const lease = leases.get(inputJobKey(id, input.idx));
    return lease ? { ...input, owner: lease.owner, leaseUntil: lease.leaseUntil } : input;
  });
}

/** Every session, oldest first, with its inputs (two queries, not one per session). */
export async function listSessions(sql: Sql): Promise<{ session: SessionRow; inputs: InputRow[] }[]> {
  const sessions = await sql<SessionRow[]>`select ${sql.unsafe(SESSION_COLUMNS)} from bulkimportstatus order by cts, id`;
  const inputs = await sql<(InputRow & { session_id: string })[]>`
    select session_id, ${sql.unsafe(INPUT_COLUMNS)} from bulkimport_input order by session_id, idx`;
  const bySession = new Map<string, InputRow[]>();
  for (const { session_id: sessionId, ...input } of inputs) {
    const list = bySession.get(sessionId) ?? [];
    list.push(input);
    bySession.set(sessionId, list);
  }
  const leases = await groupLeases(sql);
  return sessions.map((session) => ({ session, inputs: withLeases(session.id, bySession.get(session.id) ?? [], leases) }));
}

export async function secretHashOf(sql: AnySql, id: string): Promise<string | undefined> {
  const [row] = await sql<{ hash: string }[]>`select hash from bulkimport_secret where session_id = ${id}`;
  return row?.hash;
}

/** The session row, locked against concurrent actions and batch commits until `tx` ends. */
export async function lockSession(tx: TransactionSql, id: string): Promise<SessionRow | undefined> {
  const [row] = await tx<SessionRow[]>`select ${tx.unsafe(SESSION_COLUMNS)} from bulkimportstatus where id = ${id} for update`;
  return row;
}

/** A new version of the session's resource (new txid and ts); history is not kept for sessions. */
export async function writeSession(tx: TransactionSql, id: string, resource: SessionResource): Promise<void> {
  await tx`update bulkimportstatus set resource = ${resource as never}, txid = nextval('transaction_id_seq'),
           ts = now(), status = 'updated' where id = ${id}`;
}

export async function setInputStatus(
  tx: TransactionSql,
  id: string,
  change: { from: string[]; to: string; clearMessage?: boolean },
): Promise<void> {
  await tx`update bulkimport_input set status = ${change.to},
             message = case when ${change.clearMessage ?? false} then null else message end
           where session_id = ${id} and status = any(${change.from})`;
}

/** Ids of the sessions in state `active`: what a starting server resumes. */
export async function activeSessionIds(sql: Sql): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id from bulkimportstatus where resource->>'status' = 'active' order by cts`;
  return rows.map((r) => r.id);
}
