/**
 * Resource SQL for the REST basics (SPEC §2, §4): read, versioned write, delete, history, search.
 * Every write takes its txid from `transaction_id_seq` and moves the previous version to
 * `<type>_history` in the same transaction.
 */
import type { AnySql, Sql } from './db.ts';
import { ident } from './db.ts';
import { tableOf, historyTableOf } from '../fhir/types.ts';
import type { Json, ResourceRow } from '../fhir/resource.ts';

/** meta.lastUpdated as FHIR instant, microseconds, UTC; $dump produces the same text. */
export const LAST_UPDATED = `to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
const COLUMNS = `id, txid, ${LAST_UPDATED} as last_updated, resource_type, status, resource`;

/** The columns every read returns, as a fragment of a tagged statement. */
const columns = (sql: AnySql) => sql.unsafe(COLUMNS);

export async function readResource(sql: AnySql, type: string, id: string): Promise<ResourceRow | undefined> {
  const [row] = await sql<ResourceRow[]>`select ${columns(sql)} from ${sql(tableOf(type))} where id = ${id}`;
  return row;
}

export async function readVersion(sql: AnySql, type: string, id: string, txid: string): Promise<ResourceRow | undefined> {
  const [row] = await sql<ResourceRow[]>`
    select ${columns(sql)} from ${sql(tableOf(type))} where id = ${id} and txid = ${txid}
    union all select ${columns(sql)} from ${sql(historyTableOf(type))} where id = ${id} and txid = ${txid} and status <> 'deleted'`;
  return row;
}

/**
 * The next txid for a row whose previous version is `floor`. Versions of one id only grow: rows
 * inserted by hand carry their own txids (SPEC §2 demo: txid = id up to 100,000) while the sequence
 * may be far below, so when it is not above `floor` it is lifted there first. Without this, a few
 * updates of such a row reuse one of its txids and `(id, txid)` of the history table collides.
 */
function nextTxid(sql: AnySql, floor: ReturnType<AnySql['unsafe']>) {
  return sql`(select case when n > ${floor} then n else setval('transaction_id_seq', ${floor} + 1) end from nextval('transaction_id_seq') as s(n))`;
}

export interface WriteResult {
  row: ResourceRow;
  /** true when the write created the resource (status created/recreated), false for an update. */
  created: boolean;
}

/**
 * Create or replace `type/id` inside the caller's transaction: the current version is locked and
 * copied to history, then updated in place (`cts` stays the creation time). Safe against
 * concurrent writers of the same id: the loser waits for the row lock, or retries when both
 * tried to create it.
 */
export async function writeResource(tx: AnySql, type: string, id: string, stored: Record<string, Json>): Promise<WriteResult> {
  const table = tx(tableOf(type));
  for (;;) {
    const [old] = await tx<{ txid: string }[]>`
      with old as (select * from ${table} where id = ${id} for update)
      insert into ${tx(historyTableOf(type))} select * from old returning txid`;
    if (old) {
      const [row] = await tx<ResourceRow[]>`
        update ${table} set txid = ${nextTxid(tx, tx`${old.txid}::bigint`)}, ts = now(), status = 'updated', resource = ${stored as never}
        where id = ${id} returning ${columns(tx)}`;
      return { row: row!, created: false };
    }
    const row = await insertResource(tx, type, id, stored);
    if (row) return { row, created: true };
    // another transaction created it meanwhile: go round again, now it exists and we can lock it
  }
}

/**
 * Insert `type/id` unless it exists (then `undefined`): status `recreated` after a delete,
 * `created` otherwise.
 */
export async function insertResource(tx: AnySql, type: string, id: string, stored: Record<string, Json>): Promise<ResourceRow | undefined> {
  const [row] = await tx<ResourceRow[]>`
    with h as (select max(txid) as top, bool_or(status = 'deleted') as deleted from ${tx(historyTableOf(type))} where id = ${id})
    insert into ${tx(tableOf(type))} (id, txid, resource_type, status, resource)
    select ${id}, ${nextTxid(tx, tx`coalesce(h.top, 0)`)}, ${type},
           (case when h.deleted then 'recreated' else 'created' end)::resource_status, ${stored as never} from h
    on conflict (id) do nothing returning ${columns(tx)}`;
  return row;
}

/** Delete keeps the last version in history and records a `deleted` marker version after it. */
export async function deleteResource(tx: AnySql, type: string, id: string): Promise<boolean> {
  const history = tx(historyTableOf(type));
  const rows = await tx`
    with old as (delete from ${tx(tableOf(type))} where id = ${id} returning *),
         kept as (insert into ${history} select * from old returning id)
    insert into ${history} (id, txid, cts, resource_type, status, resource)
    select id, ${nextTxid(tx, tx`old.txid`)}, cts, resource_type, 'deleted', resource from old returning id`;
  return rows.length > 0;
}

export async function historyOf(sql: Sql, type: string, id: string): Promise<ResourceRow[]> {
  return await sql<ResourceRow[]>`
    select ${columns(sql)} from ${sql(tableOf(type))} where id = ${id}
    union all select ${columns(sql)} from ${sql(historyTableOf(type))} where id = ${id}
    order by txid desc`;
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
  // The one statement of this file whose shape the request decides (which filters, how many
  // _lastUpdated bounds): built as text, unprepared, so no prepared statement is left per shape.
  return await sql.unsafe<ResourceRow[]>(
    `select ${COLUMNS} from ${ident(tableOf(type))}
     ${where.length ? 'where ' + where.join(' and ') : ''} order by id limit ${query.count + 1}`,
    params as never[],
  );
}
