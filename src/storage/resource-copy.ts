/**
 * New resources COPYed straight into their resource table, with no staging table: the fast path
 * of `$load` (operations/load.ts) and `$import` (jobs/import-batch.ts) when the ids are new, as
 * in a first migration. A staging COPY + merge writes every byte twice (the staging table, then
 * the resource table) and PostgreSQL parses every jsonb once more in the staging COPY; the
 * direct COPY writes it once: 200,000 small resources took 1.75 s of PostgreSQL instead of 2.35 s
 * (BENCHMARKS.md, change 7).
 *
 * Every row is written as the set-based merge writes a new one (storage/staging-merge.ts):
 * `created`, the version's txid, cts = ts = the version's time. A COPY that meets an id the
 * table holds (a current row, one another transaction committed meanwhile, or a repeat within the
 * rows) fails with 23505 and writes nothing: run it in a savepoint, and on 23505 stage the same
 * rows and merge them (the upsert). Either way the final state is the same.
 */
import type { AnySql } from './db.ts';
import { ident } from './db.ts';
import { copyRows, timestamptzMicros } from './copy-binary.ts';
import { tableOf } from '../fhir/types.ts';
import type { StagingRow } from './staging.ts';
import type { Version } from './versions.ts';

/** COPYs `rows` (all of `type`) into the type's resource table; returns the row count. */
export async function copyIntoResources(
  tx: AnySql,
  type: string,
  version: Version,
  rows: Iterable<StagingRow> | AsyncIterable<StagingRow[]>,
): Promise<number> {
  // Every field given, none left to a column default (README "Citus"); binary, so the two
  // timestamps cost PostgreSQL no parsing (as text they cost a fifth of the COPY).
  const copy = await tx
    .unsafe(`copy ${ident(tableOf(type))} (id, txid, cts, ts, resource_type, status, resource) from stdin (format binary)`)
    .writable();
  const txid = BigInt(version.txid);
  const ts = timestamptzMicros(version.ts);
  const bytes = (row: StagingRow) => 2 + 4 + row.id.length * 3 + 12 + 12 + 12 + 4 + type.length + 11 + 5 + row.json.length * 3;
  return copyRows(copy, rows, bytes, (writer, row) => {
    if (row.type !== type) throw new Error(`a ${row.type} row in the COPY of ${type}`);
    writer.tuple(7);
    writer.text(row.id);
    writer.int8(txid);
    writer.int8(ts);
    writer.int8(ts);
    writer.text(type);
    writer.text('created');
    writer.jsonb(row.json);
  });
}

/** Ids looked up per type by `typesHolding`: the first and the last few of its rows. */
const SAMPLE = 4;

/**
 * The types of `byType` whose table already holds one of a few of their ids (the first and last
 * SAMPLE rows of each): a batch of those would fail its direct COPY with 23505 after the server
 * had encoded and sent all of it. A re-import of the same data hits at once; a first migration
 * pays one small index lookup per type and batch. The COPY still catches every id the sample missed.
 */
export async function typesHolding(tx: AnySql, byType: [string, StagingRow[]][]): Promise<string[]> {
  if (byType.length === 0) return [];
  const samples = byType.map(([, rows]) =>
    rows.length <= 2 * SAMPLE ? rows.map((r) => r.id) : [...rows.slice(0, SAMPLE), ...rows.slice(-SAMPLE)].map((r) => r.id));
  const query = byType
    .map(([type], i) => `select ${i} as i where exists (select 1 from ${ident(tableOf(type))} where id = any($${i + 1}::text[]))`)
    .join(' union all ');
  const rows = await tx.unsafe<{ i: number }[]>(query, samples);
  return rows.map((r) => byType[r.i]![0]);
}

/** The rows of each type, in their order (a batch of one input usually holds one type). */
export function rowsByType<T extends { type: string }>(rows: T[]): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const row of rows) {
    const list = out.get(row.type);
    if (list) list.push(row);
    else out.set(row.type, [row]);
  }
  return out;
}
