/**
 * `$export` state as rows (SPEC §12): `export_job` holds the request, the planned parts and the
 * checkpoint (`done_parts`); `export_file` the files of done parts, written in the same (fenced)
 * transaction as the checkpoint that names them, so a file is listed exactly when its part is done.
 * The work is an `export` row of the job table (storage/jobs.ts), which holds the lease.
 */
import type { Sql, TransactionSql } from './db.ts';
import { cancelJob, insertJob } from './jobs.ts';
import { publish } from './notify.ts';

/** The job kind of an export, and its job's key. */
export const EXPORT_KIND = 'export';
export const jobKey = (exportId: string) => `export:${exportId}`;
/** Every export job is in this group, so a server runs at most a few at once (the kind's groupLimit). */
export const EXPORT_GROUP = 'export:all';

export type ExportState = 'running' | 'done' | 'failed';

export interface ExportFileRow {
  name: string;
  part: number;
  kind: 'output' | 'deleted' | 'error';
  type: string;
  count: number;
  /** Size of the stored gzip file. */
  bytes: number;
  /** Size of the ndjson inside it. */
  plainBytes: number;
  /** Of the gzip file's content. */
  etag: string;
}

export interface ExportJobRow {
  id: string;
  clientId: string;
  level: string;
  request: string;
  params: unknown;
  state: ExportState;
  parts: unknown[] | null;
  doneParts: number[];
  transactionTime: string | null;
  total: number;
  exported: number;
  errorStatus: number | null;
  errorMessage: string | null;
  expiresAt: string | null;
  /** Seconds until `expires_at` (database clock); null while running. */
  expiresIn: number | null;
  createdAt: string;
  finishedAt: string | null;
}

/** FHIR instant with microseconds, UTC, as `meta.lastUpdated` is written (storage LAST_UPDATED). */
const INSTANT = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
const COLUMNS = `id, client_id, level, request, params, state, parts, done_parts,
  ${INSTANT('transaction_time')} as transaction_time, total::float8 as total, exported::float8 as exported,
  error_status, error_message, ${INSTANT('expires_at')} as expires_at,
  extract(epoch from expires_at - now())::float8 as expires_in,
  ${INSTANT('created_at')} as created_at, ${INSTANT('finished_at')} as finished_at`;

function toJob(r: Record<string, unknown>): ExportJobRow {
  return {
    id: String(r.id),
    clientId: String(r.client_id),
    level: String(r.level),
    request: String(r.request),
    params: r.params,
    state: r.state as ExportState,
    parts: (r.parts as unknown[] | null) ?? null,
    doneParts: ((r.done_parts as number[] | null) ?? []).map(Number),
    transactionTime: (r.transaction_time as string | null) ?? null,
    total: Number(r.total),
    exported: Number(r.exported),
    errorStatus: r.error_status === null ? null : Number(r.error_status),
    errorMessage: (r.error_message as string | null) ?? null,
    expiresAt: (r.expires_at as string | null) ?? null,
    expiresIn: r.expires_in === null ? null : Number(r.expires_in),
    createdAt: String(r.created_at),
    finishedAt: (r.finished_at as string | null) ?? null,
  };
}

export interface NewExport {
  id: string;
  clientId: string;
  level: string;
  request: string;
  params: unknown;
  parts: unknown[];
  /** Patient ids of a Patient/Group export with a known list (group members, `patient`). */
  patients?: string[];
}

/**
 * The export row, its patient list and its `export` job (SPEC §11), in one transaction: a job
 * never runs without its patients; every server is told at commit.
 */
export async function insertExport(sql: Sql, job: NewExport): Promise<void> {
  await sql.begin(async (tx) => {
    await insertJob(tx, { kind: EXPORT_KIND, key: jobKey(job.id), grp: EXPORT_GROUP, payload: { exportId: job.id } });
    await publish(tx, 'fhirhose_jobs', EXPORT_KIND);
    await publish(tx, 'fhirhose_progress', jobKey(job.id));
    await tx`insert into export_job (id, client_id, level, request, params, parts)
             values (${job.id}, ${job.clientId}, ${job.level}, ${job.request}, ${tx.json(job.params as never)}, ${tx.json(job.parts as never)})`;
    if (job.patients?.length) {
      await tx`insert into export_patient (job_id, patient_id)
               select ${job.id}, p from unnest(${job.patients}::text[]) as p on conflict do nothing`;
    }
  });
}

export async function readExport(sql: Sql, id: string): Promise<ExportJobRow | undefined> {
  const [row] = await sql.unsafe(`select ${COLUMNS} from export_job where id = $1`, [id]);
  return row ? toJob(row) : undefined;
}

export async function exportFiles(sql: Sql, id: string): Promise<ExportFileRow[]> {
  const rows = await sql`select name, part, kind, type, count::float8 as count, bytes::float8 as bytes, plain_bytes::float8 as plain_bytes, etag
                         from export_file where job_id = ${id} order by part, name`;
  return rows.map(toFile);
}

function toFile(r: Record<string, unknown>): ExportFileRow {
  return {
    name: String(r.name), part: Number(r.part), kind: r.kind as ExportFileRow['kind'], type: String(r.type),
    count: Number(r.count), bytes: Number(r.bytes), plainBytes: Number(r.plain_bytes), etag: String(r.etag),
  };
}

export async function exportFile(sql: Sql, id: string, name: string): Promise<ExportFileRow | undefined> {
  const rows = await sql`select name, part, kind, type, count::float8 as count, bytes::float8 as bytes, plain_bytes::float8 as plain_bytes, etag
                         from export_file where job_id = ${id} and name = ${name}`;
  return rows.map(toFile)[0];
}

/**
 * Deletes the export (its files' rows, patients and refs go with it) and cancels its job: the
 * claim ends (a new epoch), so a server still running it can commit nothing more, and every server
 * re-checks its runs at once (NOTIFY). True when it existed.
 */
export async function deleteExport(sql: Sql, id: string): Promise<boolean> {
  return sql.begin(async (tx) => {
    const rows = await tx`delete from export_job where id = ${id} returning id`;
    await cancelJob(tx, jobKey(id));
    await publish(tx, 'fhirhose_actions', jobKey(id));
    return rows.length > 0;
  });
}

/** The first run fixes transactionTime and the progress total, and marks done the parts it found empty. */
export async function startExport(tx: TransactionSql, id: string, start: { transactionTime: string; total: number; emptyParts: number[] }): Promise<void> {
  await tx`update export_job set transaction_time = ${start.transactionTime}::text::timestamptz, total = ${start.total},
           done_parts = ${start.emptyParts}::int[]
           where id = ${id} and transaction_time is null`;
  await publish(tx, 'fhirhose_progress', jobKey(id));
}

/**
 * Live progress between checkpoints (X-Progress); not fenced: a stale value is harmless. The
 * console's live view hears of it on `fhirhose_progress` (only when the count moved).
 */
export async function updateProgress(sql: Sql, id: string, exported: number): Promise<void> {
  const moved = await sql`update export_job set exported = ${exported} where id = ${id} and state = 'running' and exported < ${exported} returning id`;
  if (moved.length > 0) await publish(sql, 'fhirhose_progress', jobKey(id));
}

/** The checkpoint of one part: its files and its place in `done_parts`, in the caller's (fenced) transaction. */
export async function finishPart(tx: TransactionSql, id: string, part: number, files: Omit<ExportFileRow, 'part'>[]): Promise<void> {
  const done = await tx`update export_job set done_parts = array_append(done_parts, ${part}::int)
    where id = ${id} and not (${part}::int = any(done_parts)) returning id`;
  if (done.length === 0) return;
  for (const f of files) {
    await tx`insert into export_file (job_id, name, part, kind, type, count, bytes, plain_bytes, etag)
             values (${id}, ${f.name}, ${part}, ${f.kind}, ${f.type}, ${f.count}, ${f.bytes}, ${f.plainBytes}, ${f.etag})
             on conflict (job_id, name) do update set part = excluded.part, count = excluded.count, bytes = excluded.bytes,
               plain_bytes = excluded.plain_bytes, etag = excluded.etag`;
  }
  await tx`update export_job set exported = (select coalesce(sum(count), 0) from export_file where job_id = ${id} and kind = 'output')
           where id = ${id}`;
  await publish(tx, 'fhirhose_progress', jobKey(id));
}

/** done or failed, in the caller's (fenced) transaction; the files are kept until `expires_at`. */
export async function endExport(
  tx: TransactionSql,
  id: string,
  end: { state: 'done' } | { state: 'failed'; status: number; message: string },
  expiresS: number,
): Promise<void> {
  const status = end.state === 'failed' ? end.status : null;
  const message = end.state === 'failed' ? end.message : null;
  await tx`update export_job set state = ${end.state}, error_status = ${status}, error_message = ${message},
      finished_at = now(), expires_at = now() + ${expiresS} * interval '1 second'
    where id = ${id} and state = 'running'`;
  await publish(tx, 'fhirhose_progress', jobKey(id));
}

/** Finished jobs past `expires_at`: deleted here, their ids returned so their folders go too. */
export async function expireExports(sql: Sql): Promise<string[]> {
  const rows = await sql`delete from export_job where state <> 'running' and expires_at < now() returning id`;
  return rows.map((r) => String(r.id));
}

/** Every job id, for the sweep of folders whose job is gone. */
export async function exportIds(sql: Sql): Promise<Set<string>> {
  const rows = await sql`select id from export_job`;
  return new Set(rows.map((r) => String(r.id)));
}
