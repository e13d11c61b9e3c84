/**
 * Reading an `$export` (SPEC §12): one snapshot for the whole run, and COPYs of parts on it.
 *
 * transactionTime. Every version's `ts` is its transaction's start (`now()`), and it becomes
 * visible only at commit. So "every resource with ts <= transactionTime is committed and in the
 * export" needs transactionTime before the start of every transaction still open when the
 * snapshot is taken. Before the snapshot we read the clock and the oldest open transaction's
 * `xact_start` (pg_stat_activity, this database, other backends); transactionTime is the clock, or
 * one microsecond before that start when it is earlier. Anything that committed before that
 * read is in the snapshot; anything open then or begun later has a `ts` above transactionTime, so
 * `_since=<transactionTime>` catches it next time. A long transaction elsewhere pulls
 * transactionTime back (the next incremental export repeats some resources, it never misses one);
 * our own snapshot holders and readers are left out (they never write), by their
 * application_name.
 */
import type { Sql } from './db.ts';
import { ident } from './db.ts';
import { copyOut, release, reserveConnection, type StreamConnection } from './copy-out.ts';
import { tableOf } from '../fhir/types.ts';
import { deletedSelect, partSelect, refsSelect, type PartQuery } from './export-sql.ts';
import { literal } from './export-sql.ts';

export const EXPORT_APPLICATION = 'fhirhose-export';
const SNAPSHOT = 'begin transaction isolation level repeatable read, read only';
/** A table this big is read by two COPYs at once over halves of its pages, as $dump does. */
const SPLIT_MIN_BYTES = 8 << 20;

export interface ExportSnapshot {
  /** pg_export_snapshot() of the holding transaction. */
  id: string;
  transactionTime: string;
  close(): void;
}

/** Opens the snapshot every part of this run reads; hold it until the run ends. */
export async function openSnapshot(sql: Sql): Promise<ExportSnapshot> {
  const conn = await sql.reserve();
  const c: StreamConnection = { conn, inTransaction: false };
  try {
    const [clock] = await conn.unsafe(`select to_char(least(clock_timestamp(),
        (select min(xact_start) - interval '1 microsecond' from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid() and xact_start is not null
            and application_name <> '${EXPORT_APPLICATION}'))
      at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as t`);
    await conn.unsafe(SNAPSHOT);
    c.inTransaction = true;
    await conn.unsafe(`set local application_name = '${EXPORT_APPLICATION}'`);
    const [row] = await conn.unsafe('select pg_export_snapshot() as id');
    return { id: String(row!.id), transactionTime: String(clock!.t), close: () => release(c) };
  } catch (err) {
    release(c, err);
    throw err;
  }
}

/** A connection in a read-only transaction on `snapshot`, marked as ours. */
async function onSnapshot(sql: Sql, snapshot: string): Promise<StreamConnection> {
  const c = await reserveConnection(sql, SNAPSHOT);
  try {
    await c.conn.unsafe(`set transaction snapshot ${literal(snapshot)}`);
    await c.conn.unsafe(`set local application_name = '${EXPORT_APPLICATION}'`);
    return c;
  } catch (err) {
    release(c, err);
    throw err;
  }
}

/**
 * Binary COPYs of `select id, txid, ts, resource` for the part, on the snapshot: one, or two over
 * halves of the table's pages when it is big and `split()` says a second connection may be used
 * (two PostgreSQL backends turn jsonb into text in parallel, as for $dump). Each stream releases
 * its connection when it ends or is cancelled.
 */
export async function openPart(sql: Sql, snapshot: string, q: PartQuery, options: { split: () => boolean }): Promise<ReadableStream<Uint8Array>[]> {
  const [size] = await sql`select pg_relation_size(${ident(tableOf(q.type))}::regclass)::float8 as bytes,
    current_setting('block_size')::int as block`;
  const halves = Number(size!.bytes) >= SPLIT_MIN_BYTES && options.split() ? 2 : 1;
  if (halves === 1) {
    return [await copyOut(sql, `copy (${partSelect(q)}) to stdout (format binary)`, { connection: await onSnapshot(sql, snapshot), reuseBuffer: true })];
  }
  const half = Math.floor(Number(size!.bytes) / Number(size!.block) / 2);
  const streams: ReadableStream<Uint8Array>[] = [];
  try {
    for (const range of [`r.ctid < '(${half},0)'`, `r.ctid >= '(${half},0)'`]) {
      const connection = await onSnapshot(sql, snapshot);
      streams.push(await copyOut(sql, `copy (${partSelect(q, range)}) to stdout (format binary)`, { connection, reuseBuffer: true }));
    }
  } catch (err) {
    for (const s of streams) await s.cancel().catch(() => {});
    throw err;
  }
  return streams;
}

export interface DeletedRow {
  id: string;
  txid: string;
  /** meta.lastUpdated of the deletion. */
  ts: string;
}

/** The deletions of a part, in batches (a cursor on the snapshot). */
export async function* deletedRows(sql: Sql, snapshot: string, q: PartQuery): AsyncGenerator<DeletedRow[]> {
  const c = await onSnapshot(sql, snapshot);
  let failure: unknown;
  try {
    const query = `select d.id, d.txid::text as txid, to_char(d.ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as ts
      from (${deletedSelect(q)}) d`;
    for await (const rows of c.conn.unsafe(query).cursor(1000)) {
      yield rows.map((r) => ({ id: String(r.id), txid: String(r.txid), ts: String(r.ts) }));
    }
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    release(c, failure);
  }
}

/**
 * Collects, on the snapshot, the referenced ids of `refTypes` that the compartment parts' rows
 * hold, and stores them in export_ref (outside the snapshot, so a resumed job finds them).
 */
export async function collectRefs(sql: Sql, snapshot: string, jobId: string, parts: PartQuery[], refTypes: string[]): Promise<void> {
  let refs: { type: string; id: string }[] = [];
  if (parts.length && refTypes.length) {
    const c = await onSnapshot(sql, snapshot);
    let failure: unknown;
    try {
      refs = (await c.conn.unsafe(refsSelect(parts, refTypes))).map((r) => ({ type: String(r.type), id: String(r.id) }));
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      release(c, failure);
    }
  }
  await sql.begin(async (tx) => {
    await tx`delete from export_ref where job_id = ${jobId}`;
    for (let i = 0; i < refs.length; i += 5000) {
      const batch = refs.slice(i, i + 5000);
      await tx`insert into export_ref (job_id, type, id)
        select ${jobId}, t, i from unnest(${batch.map((r) => r.type)}::text[], ${batch.map((r) => r.id)}::text[]) as u(t, i) on conflict do nothing`;
    }
  });
}

/** The ids collected for `type` by collectRefs. */
export async function referencedIds(sql: Sql, jobId: string, type: string): Promise<string[]> {
  const rows = await sql`select id from export_ref where job_id = ${jobId} and type = ${type} order by id`;
  return rows.map((r) => String(r.id));
}

/** Of `types`, those whose table holds no row in the snapshot: their parts have nothing to do. */
export async function emptyTypes(sql: Sql, snapshot: string, types: string[]): Promise<string[]> {
  if (types.length === 0) return [];
  const c = await onSnapshot(sql, snapshot);
  let failure: unknown;
  try {
    const probes = types.map((t) => `select ${literal(t)} as type where not exists (select 1 from ${ident(tableOf(t))})`);
    const rows = await c.conn.unsafe(probes.join(' union all '));
    return rows.map((r) => String(r.type));
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    release(c, failure);
  }
}

/** Each type's table size in bytes (with its TOAST): a run starts its biggest parts first. */
export async function tableBytes(sql: Sql, types: string[]): Promise<Map<string, number>> {
  if (types.length === 0) return new Map();
  const rows = await sql`select t as type, pg_table_size(to_regclass(t2))::float8 as bytes
    from unnest(${types}::text[], ${types.map((t) => tableOf(t))}::text[]) as u(t, t2)`;
  return new Map(rows.map((r) => [String(r.type), Number(r.bytes ?? 0)]));
}

/**
 * Rows of the types for X-Progress: the planner's estimate (reltuples), 0 for an empty table,
 * an exact count only for a non-empty table never analysed yet.
 */
export async function estimateRows(sql: Sql, types: string[]): Promise<number> {
  if (types.length === 0) return 0;
  const tables = types.map((t) => tableOf(t));
  const rows = await sql`select c.relname as name, c.reltuples::float8 as n, pg_relation_size(c.oid)::float8 as bytes
    from pg_class c join pg_namespace ns on ns.oid = c.relnamespace
    where ns.nspname = current_schema() and c.relkind = 'r' and c.relname = any(${tables}::text[])`;
  let total = 0;
  for (const row of rows) {
    const n = Number(row.n);
    if (n >= 0) total += n;
    else if (Number(row.bytes) > 0) total += Number((await sql.unsafe(`select count(*)::float8 as n from ${ident(String(row.name))}`))[0]!.n);
  }
  return Math.round(total);
}
