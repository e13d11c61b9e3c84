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

export async function readResource(sql: AnySql, type: string, id: string): Promise<ResourceRow | undefined> {
  const rows = await sql.unsafe(`select ${COLUMNS} from ${ident(tableOf(type))} where id = $1`, [id]);
  return rows[0] as ResourceRow | undefined;
}

export async function readVersion(sql: AnySql, type: string, id: string, txid: string): Promise<ResourceRow | undefined> {
  const rows = await sql.unsafe(
    `select ${COLUMNS} from ${ident(tableOf(type))} where id = $1 and txid = $2
     union all select ${COLUMNS} from ${ident(historyTableOf(type))} where id = $1 and txid = $2 and status <> 'deleted'`,
    [id, txid],
  );
  return rows[0] as ResourceRow | undefined;
}

/**
 * Create or replace `type/id` inside the caller's transaction. Returns the stored row and whether
 * it was created (status created/recreated) or updated.
 */
export async function writeResource(
  tx: AnySql,
  type: string,
  id: string,
  stored: Record<string, Json>,
): Promise<{ row: ResourceRow; created: boolean }> {
  const table = ident(tableOf(type));
  const history = ident(historyTableOf(type));
  const moved = await tx.unsafe(
    `with old as (delete from ${table} where id = $1 returning *)
     insert into ${history} select * from old returning id`,
    [id],
  );
  let status = 'updated';
  if (moved.length === 0) {
    const [wasDeleted] = await tx.unsafe(`select 1 from ${history} where id = $1 and status = 'deleted' limit 1`, [id]);
    status = wasDeleted ? 'recreated' : 'created';
  }
  const rows = await tx.unsafe(
    `insert into ${table} (id, txid, resource_type, status, resource)
     values ($1, nextval('transaction_id_seq'), $2, $3, $4) returning ${COLUMNS}`,
    [id, type, status, stored as never],
  );
  return { row: rows[0] as ResourceRow, created: status !== 'updated' };
}

/** Delete keeps the last version in history and records a `deleted` marker version. */
export async function deleteResource(tx: AnySql, type: string, id: string): Promise<boolean> {
  const table = ident(tableOf(type));
  const history = ident(historyTableOf(type));
  const rows = await tx.unsafe(
    `with old as (delete from ${table} where id = $1 returning *),
          kept as (insert into ${history} select * from old returning id)
     insert into ${history} (id, txid, resource_type, status, resource)
     select id, nextval('transaction_id_seq'), resource_type, 'deleted', resource from old returning id`,
    [id],
  );
  return rows.length > 0;
}

export async function historyOf(sql: Sql, type: string, id: string): Promise<ResourceRow[]> {
  const rows = await sql.unsafe(
    `select ${COLUMNS} from ${ident(tableOf(type))} where id = $1
     union all select ${COLUMNS} from ${ident(historyTableOf(type))} where id = $1
     order by txid desc`,
    [id],
  );
  return rows as unknown as ResourceRow[];
}

export interface SearchQuery {
  ids?: string[];
  lastUpdated: { op: 'eq' | 'gt' | 'ge' | 'lt' | 'le'; value: string }[];
  count: number;
  after?: string;
}

const OPS = { eq: '=', gt: '>', ge: '>=', lt: '<', le: '<=' } as const;

/** Keyset page ordered by id: returns up to count + 1 rows so the caller knows if a next page exists. */
export async function searchResources(sql: Sql, type: string, query: SearchQuery): Promise<ResourceRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const param = (v: unknown) => { params.push(v); return `$${params.length}`; };
  if (query.ids) where.push(`id = any(${param(query.ids)}::text[])`);
  for (const c of query.lastUpdated) where.push(`ts ${OPS[c.op]} ${param(c.value)}::timestamptz`);
  if (query.after !== undefined) where.push(`id > ${param(query.after)}`);
  const rows = await sql.unsafe(
    `select ${COLUMNS} from ${ident(tableOf(type))}
     ${where.length ? 'where ' + where.join(' and ') : ''} order by id limit ${query.count + 1}`,
    params as never[],
  );
  return rows as unknown as ResourceRow[];
}
