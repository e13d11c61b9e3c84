/**
 * The staging table of `$load` and `$import` (SPEC §7): lines are streamed into it with a binary
 * `COPY … FROM STDIN` (storage/copy-binary.ts), then merged into the resource tables with
 * set-based SQL.
 */
import type { AnySql } from './db.ts';
import { ident, pgCode } from './db.ts';
import { copyRows } from './copy-binary.ts';
import { mergeBatched, mergeSetBased } from './staging-merge.ts';
import { takeVersion, type Version } from './versions.ts';
import { isKnownType } from '../fhir/types.ts';
import { OperationOutcomeError } from '../fhir/outcome.ts';

/** What `copyIntoStaging` needs of a parsed line (`GoodLine` of operations/ingest.ts). */
export interface StagingRow {
  line: number;
  type: string;
  id: string;
  /** The `resource` column's JSON text (no id, resourceType, meta.versionId, meta.lastUpdated). */
  json: string;
  /** Literal `Type/id` references, only when the refs check will run. */
  refs?: string[];
}

/** Marks staging tables, so a kept `temp_table` may be replaced by the next load but a real table never is. */
const MARK = 'fhirhose staging table';
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
/** Below this many staged rows a scan per type costs less than building an index on type. */
const INDEX_MIN_ROWS = 10_000;

export function isPlainIdentifier(name: string): boolean {
  return IDENTIFIER.test(name);
}

/**
 * Creates a staging table and returns its name: an unlogged table (no WAL: it is a scratch copy)
 * that outlives the transaction, named `name` or `_fhirhose_stage_<random>`; the caller drops it.
 * Unlogged rather than temporary: see operations/load.ts and jobs/import-input.ts for the
 * measurements. An existing table of that name is replaced only if an earlier load created it;
 * any other table → 409.
 */
export async function createStaging(tx: AnySql, options: { name?: string } = {}): Promise<string> {
  const random = `_fhirhose_stage_${crypto.randomUUID().replaceAll('-', '').slice(0, 16)}`;
  const name = options.name ?? random;
  if (!isPlainIdentifier(name)) throw new OperationOutcomeError('invalid', `"${name}" is not a plain SQL identifier`);
  const columns = 'line int not null, type text not null, id text not null, resource jsonb not null, refs text[], error text';
  const [existing] = await tx<{ mark: string | null }[]>`
    select obj_description(c.oid, 'pg_class') as mark from pg_class c
    where c.relname = ${name} and c.relnamespace = current_schema()::regnamespace`;
  if (existing && existing.mark !== MARK) {
    throw new OperationOutcomeError('conflict', `A table named "${name}" already exists and was not created by $load; choose another temp_table`);
  }
  if (existing) await tx.unsafe(`drop table ${ident(name)}`);
  await tx.unsafe(`create unlogged table ${ident(name)} (${columns})`).catch((err: unknown) => {
    // Another load created it and had not committed: we waited for it on the catalog's unique
    // index, which then reports 23505 (pg_type_typname_nsp_index), or 42P07.
    if (pgCode(err) !== '42P07' && pgCode(err) !== '23505') throw err;
    throw new OperationOutcomeError('conflict', `temp_table "${name}" is being used by another load; try again or choose another name`);
  });
  await tx.unsafe(`comment on table ${ident(name)} is '${MARK}'`);
  return name;
}

export async function dropStaging(sql: AnySql, table: string): Promise<void> {
  await sql.unsafe(`drop table if exists ${ident(table)}`);
}

/**
 * Streams rows into the staging table with one binary `COPY … FROM STDIN`, honouring the socket's
 * backpressure. If `rows` throws, the COPY is failed (CopyFail), the error is rethrown and the
 * caller's transaction is unusable: nothing reaches the resource tables. Returns the row count.
 */
export async function copyIntoStaging(
  tx: AnySql,
  table: string,
  rows: Iterable<StagingRow> | AsyncIterable<StagingRow | StagingRow[]>,
): Promise<number> {
  const copy = await tx.unsafe(`copy ${ident(table)} (line, type, id, resource, refs) from stdin (format binary)`).writable();
  return copyRows(copy, rows, stagingRowBytes, (writer, row) => {
    writer.tuple(5);
    writer.int4(row.line);
    writer.text(row.type);
    writer.text(row.id);
    writer.jsonb(row.json);
    if (row.refs === undefined) writer.null();
    else writer.textArray(row.refs);
  });
}

/** The most bytes a staging row takes in the binary COPY (strings at 3 bytes per UTF-16 unit). */
function stagingRowBytes(row: StagingRow): number {
  let refs = 4;
  if (row.refs !== undefined) {
    refs = 24;
    for (const ref of row.refs) refs += 4 + ref.length * 3;
  }
  return 2 + 8 + 4 + row.type.length + 4 + row.id.length * 3 + 5 + row.json.length * 3 + refs;
}

export interface MergeOptions {
  /** true: overwritten current rows are copied to `<type>_history` first (SPEC §7 `update`). */
  update: boolean;
  /** copy: one set-based upsert per type; insert: batches of `batchRows` upserts. Same final state. */
  method: 'copy' | 'insert';
  batchRows?: number;
  /** Rows per type with `error is null`, when the caller counted them; saves a scan of the staging table. */
  staged?: Record<string, number>;
  /**
   * copy: per type, whether a plain INSERT is tried before the upsert (staging-merge.ts
   * `mergeSetBased`); default 'when-empty', when the type's table has no row.
   */
  insertFirst?: (type: string) => boolean | 'when-empty';
  /** The version to write with (default: one taken for this merge), e.g. the one of rows a direct COPY wrote in the same load. */
  version?: Version;
}

export interface MergeResult {
  /** Resources written per type (created or updated). */
  counts: Record<string, number>;
  /** Staged rows superseded by a later line with the same type and id (the last line wins). */
  duplicates: number;
  /** Types whose plain INSERT met an existing id (and were upserted instead). */
  conflicted: string[];
}

/**
 * The staging table's index by type, built once whoever asks first: the merge's per-type reads
 * use it, and with `withId` so does `$load`'s move back of rows written straight
 * (operations/load-direct.ts), whose join must not scan the table once per row. A merge after
 * that move back reads through the (type, id) index instead of building a second one.
 */
export async function indexStagingByType(tx: AnySql, table: string, options: { withId?: boolean } = {}): Promise<void> {
  await tx.unsafe(`create index if not exists ${ident(`${table}_type`)} on ${ident(table)} (type${options.withId ? ', id' : ''})`);
}

/**
 * Upserts the staging rows without `error` into the resource tables, inside the caller's
 * transaction. One version (storage/versions.ts) for the whole merge: every resource it writes gets
 * the same txid from `transaction_id_seq` (above the id's previous one) and ts = the transaction's
 * now(); new rows are `created`, overwritten ones `updated` (cts kept).
 */
export async function mergeStaging(tx: AnySql, table: string, options: MergeOptions): Promise<MergeResult> {
  const staged = options.staged ?? (await stagedPerType(tx, table));
  const counts: Record<string, number> = {};
  let duplicates = 0;
  const conflicted: string[] = [];
  let version = options.version;
  // The set-based merge reads the staging table once per type. With many types (a whole export in
  // one file) those scans were a third of the merge: 15 scans of 200,000 small rows (177 MB, more
  // than the default 128 MB of shared_buffers) 1.6–1.7 s; the index is built in one pass and each
  // type then reads its own rows (BENCHMARKS.md, $load). mergeBatched has an index of its own.
  const types = Object.values(staged).filter((n) => n > 0);
  if (options.method === 'copy' && types.length > 1 && types.reduce((a, b) => a + b, 0) >= INDEX_MIN_ROWS) {
    await indexStagingByType(tx, table);
  }
  for (const [type, rows] of Object.entries(staged)) {
    if (rows === 0) continue;
    if (!isKnownType(type)) throw new Error(`staging table ${table} holds an unknown type ${JSON.stringify(type)}`);
    version ??= await takeVersion(tx);
    let merged: number;
    if (options.method === 'copy') {
      const result = await mergeSetBased(tx, table, type, { update: options.update, version, insertFirst: options.insertFirst?.(type) });
      merged = result.count;
      if (result.conflicted) conflicted.push(type);
    } else {
      merged = await mergeBatched(tx, table, type, { update: options.update, batchRows: options.batchRows ?? 5000, version });
    }
    counts[type] = merged;
    duplicates += rows - merged;
  }
  return { counts, duplicates, conflicted };
}

async function stagedPerType(tx: AnySql, table: string): Promise<Record<string, number>> {
  const rows = await tx.unsafe<{ type: string; n: number }[]>(`select type, count(*)::int as n from ${ident(table)} where error is null group by type order by type`);
  return Object.fromEntries(rows.map((r) => [r.type, r.n]));
}
