/**
 * The SQL of one `$import` input at work (SPEC §8): claim it, gate each batch on the session's
 * state and the input's checkpoint, record the batch's progress in the batch's own transaction.
 */
import type { AnySql, Sql, TransactionSql } from './db.ts';
import { ident } from './db.ts';
import { publish } from './notify.ts';

export type Gate = 'ok' | 'stopped' | 'lost';

/**
 * Opens a batch inside `tx`. FOR SHARE on the session row makes a batch and an action serialize:
 * a pause that answered 200 is never followed by a commit, and a batch in flight delays the pause
 * by at most its own duration. `stopped`: the session is no longer active (pause, abort, error,
 * deleted). `lost`: another worker moved this input's checkpoint, or a force-resume handed the
 * input to a new worker; the caller must stop without writing.
 */
export async function gateBatch(tx: TransactionSql, id: string, idx: number, checkpoint: number): Promise<Gate> {
  const [session] = await tx`select resource->>'status' as status from bulkimportstatus where id = ${id} for share`;
  if (!session || session.status !== 'active') return 'stopped';
  const [input] = await tx`select checkpoint::float8 as checkpoint, status from bulkimport_input
                           where session_id = ${id} and idx = ${idx} for update`;
  if (!input || input.status !== 'active' || input.checkpoint !== checkpoint) return 'lost';
  return 'ok';
}

/** Marks the input `active` (first start time kept), under the same gate as a batch. */
export async function claimInput(tx: TransactionSql, id: string, idx: number): Promise<boolean> {
  const [session] = await tx`select resource->>'status' as status from bulkimportstatus where id = ${id} for share`;
  if (!session || session.status !== 'active') return false;
  const claimed = await tx`update bulkimport_input set status = 'active', started_at = coalesce(started_at, now()), finished_at = null
                           where session_id = ${id} and idx = ${idx} and status in ('pending', 'active') returning idx`;
  return claimed.length > 0;
}

export interface BatchProgress {
  /** Number of the last line this batch covers: where the input resumes. */
  checkpoint: number;
  bytesRead: number;
  bytesTotal?: number;
  imported: number;
  errorCount: number;
  /** Only as many as still fit in the stored first-N list. */
  errors: { line: number; message: string }[];
  runMs: number;
  /** The source ended with this batch: the input is `done`. */
  done: boolean;
}

export async function recordBatch(tx: TransactionSql, id: string, idx: number, p: BatchProgress): Promise<void> {
  // delivered at commit: the console's live view (SPEC §14) re-reads this session, nothing polls
  await publish(tx, 'fhirhose_progress', id);
  await tx`update bulkimport_input set
      checkpoint = ${p.checkpoint}, lines_read = ${p.checkpoint}, bytes_read = greatest(bytes_read, ${p.bytesRead}),
      bytes_total = coalesce(bytes_total, ${p.bytesTotal ?? null}::bigint),
      imported = imported + ${p.imported}, error_count = error_count + ${p.errorCount},
      errors = errors || ${tx.json(p.errors as never)}, run_ms = run_ms + ${Math.round(p.runMs)},
      status = case when ${p.done} then 'done' else status end,
      finished_at = case when ${p.done} then now() else finished_at end,
      message = null
    where session_id = ${id} and idx = ${idx}`;
}

/**
 * Bytes read so far by a running input, between its batch commits (SPEC §8: progress as bytes are
 * read, so a stalled input looks stalled, not slow). Never lowers the count: a resumed input reads
 * its source again from the start.
 */
export async function reportBytes(sql: AnySql, id: string, idx: number, bytesRead: number): Promise<void> {
  await sql`update bulkimport_input set bytes_read = greatest(bytes_read, ${bytesRead})
            where session_id = ${id} and idx = ${idx} and status = 'active'`;
}

/** The input failed: `error` with the message; the caller moves the session in the same tx. */
export async function failInput(tx: TransactionSql, id: string, idx: number, message: string): Promise<void> {
  await tx`update bulkimport_input set status = 'error', message = ${message}, finished_at = now()
           where session_id = ${id} and idx = ${idx}`;
}

/**
 * The inputs still running when a sibling failed are `stopped` with a message saying why, and their
 * clock stops (`finished_at`); pending ones stay `pending`. force-resume runs both on.
 */
export async function parkInputs(tx: TransactionSql, id: string, why: string): Promise<void> {
  await tx`update bulkimport_input set status = 'stopped', message = ${why}, finished_at = now()
           where session_id = ${id} and status = 'active'`;
}

export async function allInputsDone(tx: TransactionSql, id: string): Promise<boolean> {
  const [row] = await tx`select count(*)::int as n from bulkimport_input where session_id = ${id} and status <> 'done'`;
  return row!.n === 0;
}

/** Empties an input's staging table inside the batch's transaction (a crash rolls it back too). */
export async function emptyStaging(tx: TransactionSql, table: string): Promise<void> {
  await tx.unsafe(`truncate ${ident(table)}`);
}

/**
 * Staging tables named `<prefix>…` that no live claim uses: left by claims that died (a killed
 * server) or lost (a frozen one). `keep` is asked AFTER the tables are listed, so a table created
 * after its claim committed is always kept. A table still locked by a stale transaction is left
 * for the next sweep.
 */
export async function dropOrphanStaging(sql: Sql, prefix: string, keep: () => Promise<Set<string>>): Promise<string[]> {
  const rows = await sql<{ relname: string }[]>`select relname from pg_class
    where relkind = 'r' and relnamespace = current_schema()::regnamespace and starts_with(relname, ${prefix})`;
  if (rows.length === 0) return [];
  const live = await keep();
  const dropped: string[] = [];
  for (const { relname } of rows) {
    if (live.has(relname)) continue;
    const ok = await sql.begin(async (tx) => {
      await tx`set local lock_timeout = '1s'`;
      await tx.unsafe(`drop table if exists ${ident(relname)}`);
    }).then(() => true, () => false);
    if (ok) dropped.push(relname);
  }
  return dropped;
}

/** Every input of the session that is not a `deleted` file is done: its deletes may run (SPEC §13). */
export async function outputsDone(sql: AnySql, id: string): Promise<boolean> {
  const [row] = await sql`select count(*)::int as n from bulkimport_input where session_id = ${id} and storage <> 'deleted' and status <> 'done'`;
  return row!.n === 0;
}
