/**
 * Resource SQL for the REST basics (SPEC §2, §4): read, versioned write, delete, history, search.
 * Every write takes its txid from `transaction_id_seq` (storage/versions.ts, before the write) and
 * moves the previous version to `<type>_history` in the same transaction.
 */
import type { AnySql, Sql } from './db.ts';
import { ident } from './db.ts';
import { tableOf, historyTableOf } from '../fhir/types.ts';
import type { Json, ResourceRow } from '../fhir/resource.ts';
import { parseKeepingNumbers } from '../fhir/json-numbers.ts';
import { instantText, liftSequence, takeVersion, txidAbove, type Version } from './versions.ts';
import type { Criterion } from '../fhir/search-criteria.ts';
import { criterionSql } from './search-sql.ts';

/** meta.lastUpdated as FHIR instant, microseconds, UTC; $dump produces the same text. */
export const LAST_UPDATED = instantText('ts');
// `resource` as text, parsed here keeping its numbers as PostgreSQL keeps them (`0.0`, not `0`):
// postgres.js's own jsonb parse is JSON.parse (fhir/json-numbers.ts).
const COLUMNS = `id, txid, ${LAST_UPDATED} as last_updated, resource_type, status, resource::text as resource`;

/** The columns every read returns, as a fragment of a tagged statement. */
const columns = (sql: AnySql) => sql.unsafe(COLUMNS);

export async function readResource(sql: AnySql, type: string, id: string): Promise<ResourceRow | undefined> {
  const [row] = await sql<ResourceRow[]>`select ${columns(sql)} from ${sql(tableOf(type))} where id = ${id}`;
  return row && parsed(row);
}

export async function readVersion(sql: AnySql, type: string, id: string, txid: string): Promise<ResourceRow | undefined> {
  const [row] = await sql<ResourceRow[]>`
    select ${columns(sql)} from ${sql(tableOf(type))} where id = ${id} and txid = ${txid}
    union all select ${columns(sql)} from ${sql(historyTableOf(type))} where id = ${id} and txid = ${txid} and status <> 'deleted'`;
  return row && parsed(row);
}

export interface WriteResult {
  row: ResourceRow;
  /** true when the write created the resource (status created/recreated), false for an update. */
  created: boolean;
}

/** What a write returns: plain columns only (no `to_char` in RETURNING, SPEC §11); `ts` is the version's. */
const written = (sql: AnySql) => sql.unsafe('id, txid::text as txid, resource_type, status, resource::text as resource');
const withVersion = (row: unknown, version: Version) => parsed({ ...(row as ResourceRow), last_updated: version.ts });

/** A row read with `resource::text`, its resource parsed keeping the numbers as written. */
function parsed(row: ResourceRow): ResourceRow {
  const text = row.resource as unknown as string;
  row.resource = parseKeepingNumbers(text) as ResourceRow['resource'];
  return row;
}

/**
 * Create or replace `type/id` inside the caller's transaction: the current version is locked and
 * copied to history, then updated in place (`cts` stays the creation time). Safe against
 * concurrent writers of the same id: the loser waits for the row lock, or retries when both
 * tried to create it. `version` lets a batch of writes share one (PUT /: one per transaction).
 */
export async function writeResource(tx: AnySql, type: string, id: string, stored: Record<string, Json>, options: { version?: Version } = {}): Promise<WriteResult> {
  const table = tx(tableOf(type));
  const version = options.version ?? (await takeVersion(tx));
  for (;;) {
    const [old] = await moveToHistory(tx, type, id);
    if (old) {
      const txid = await txidAbove(tx, version.txid, old.txid);
      const [row] = await tx`
        update ${table} set txid = ${txid}::bigint, ts = ${version.ts}::text::timestamptz, status = 'updated', resource = ${stored as never}
        where id = ${id} returning ${written(tx)}`;
      return { row: withVersion(row, version), created: false };
    }
    const row = await insertResource(tx, type, id, stored, { version });
    if (row) return { row, created: true };
    // another transaction created it meanwhile: go round again, now it exists and we can lock it
  }
}

/** Locks the current version of `id` and copies it to history; its txid (no row: none). */
function moveToHistory(tx: AnySql, type: string, id: string) {
  return tx<{ txid: string }[]>`
    with old as (select * from ${tx(tableOf(type))} where id = ${id} for update)
    insert into ${tx(historyTableOf(type))} select * from old returning txid::text as txid`;
}

/**
 * Insert `type/id` unless it exists (then `undefined`): status `recreated` after a delete,
 * `created` otherwise. Its txid is above every version of the id in history.
 */
export async function insertResource(tx: AnySql, type: string, id: string, stored: Record<string, Json>, options: { version?: Version } = {}): Promise<ResourceRow | undefined> {
  const version = options.version ?? (await takeVersion(tx));
  const ts = tx`${version.ts}::text::timestamptz`;
  const [row] = await tx<{ txid: string }[]>`
    with h as (select max(txid) as top, bool_or(status = 'deleted') as deleted from ${tx(historyTableOf(type))} where id = ${id})
    insert into ${tx(tableOf(type))} (id, txid, cts, ts, resource_type, status, resource)
    select ${id}, greatest(${version.txid}::bigint, coalesce(h.top, 0) + 1), ${ts}, ${ts}, ${type},
           (case when h.deleted then 'recreated' else 'created' end)::resource_status, ${stored as never} from h
    on conflict (id) do nothing returning ${written(tx)}`;
  if (!row) return undefined;
  if (BigInt(row.txid) > BigInt(version.txid)) await liftSequence(tx, BigInt(row.txid));
  return withVersion(row, version);
}

/**
 * Delete keeps the last version in history and records a `deleted` marker version after it.
 * Three statements, not one statement of modifying CTEs over the table and its history (SPEC §11).
 */
export async function deleteResource(tx: AnySql, type: string, id: string): Promise<boolean> {
  const table = tx(tableOf(type));
  const version = await takeVersion(tx);
  const [old] = await moveToHistory(tx, type, id);
  if (!old) return false;
  const txid = await txidAbove(tx, version.txid, old.txid);
  await tx`
    insert into ${tx(historyTableOf(type))} (id, txid, cts, ts, resource_type, status, resource)
    select id, ${txid}::bigint, cts, ${version.ts}::text::timestamptz, resource_type, 'deleted', resource from ${table} where id = ${id}`;
  await tx`delete from ${table} where id = ${id}`;
  return true;
}

export async function historyOf(sql: Sql, type: string, id: string): Promise<ResourceRow[]> {
  const rows = await sql<ResourceRow[]>`
    select ${columns(sql)} from ${sql(tableOf(type))} where id = ${id}
    union all select ${columns(sql)} from ${sql(historyTableOf(type))} where id = ${id}
    order by txid desc`;
  return rows.map(parsed);
}

/** A `_lastUpdated` value: the range [start, start + width) its precision covers, and the comparison. */
export interface DateBound {
  op: 'eq' | 'gt' | 'ge' | 'lt' | 'le';
  start: string;
  width: string;
}

export interface SearchQuery {
  ids?: string[];
  lastUpdated: DateBound[];
  /** Other search parameters (storage/search-sql.ts), AND-ed. */
  criteria?: Criterion[];
  count: number;
  after?: string;
}

/** Keyset page ordered by id: returns up to count + 1 rows so the caller knows if a next page exists. */
export async function searchResources(sql: Sql, type: string, query: SearchQuery): Promise<ResourceRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const param = (v: unknown) => { params.push(v); return `$${params.length}`; };
  if (query.ids) where.push(`id = any(${param(query.ids)}::text[])`);
  for (const b of query.lastUpdated) {
    // ::text first: postgres.js would serialise a timestamptz parameter through a JS Date, dropping microseconds
    const start = () => `${param(b.start)}::text::timestamptz`;
    const end = () => `(${start()} + ${param(b.width)}::interval)`;
    if (b.op === 'eq') where.push(`ts >= ${start()} and ts < ${end()}`);
    else if (b.op === 'gt') where.push(`ts >= ${end()}`);
    else if (b.op === 'ge') where.push(`ts >= ${start()}`);
    else if (b.op === 'lt') where.push(`ts < ${start()}`);
    else where.push(`ts < ${end()}`);
  }
  if (query.after !== undefined) where.push(`id > ${param(query.after)}`);
  for (const c of query.criteria ?? []) where.push(criterionSql(c, 'r'));
  // The one statement of this file whose shape the request decides (which filters, how many
  // _lastUpdated bounds): built as text, unprepared, so no prepared statement is left per shape.
  const rows = await sql.unsafe<ResourceRow[]>(
    `select ${COLUMNS} from ${ident(tableOf(type))} r
     ${where.length ? 'where ' + where.join(' and ') : ''} order by id limit ${query.count + 1}`,
    params as never[],
  );
  return rows.map(parsed);
}
