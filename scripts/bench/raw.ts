/**
 * The raw baselines of `npm run bench` (SPEC §9), each on one connection or split over two at once
 * (the two-core limit):
 *
 * - load: per type, the lines already gunzipped in memory → raw `COPY` into an unlogged jsonb
 *   staging table → one set-based upsert into the type's table, in one transaction per connection.
 *   Two connections: each type's lines halved at a line end, one half per connection.
 * - dump: per type, `COPY (select resource from <table>) TO STDOUT` through postgres.js, every
 *   byte read and every line counted. Two connections: one COPY over each half of the table's
 *   pages (`ctid` ranges), both at once.
 *
 * Each worker reports the CPU seconds of its own PostgreSQL backend; the bench process is the client.
 */
import fs from 'node:fs';
import { connect, ident, type Sql } from '../../src/storage/db.ts';
import { tableOf } from '../../src/fhir/types.ts';
import { split, type TypeData } from './data.ts';
import { timed, truncate } from './common.ts';

const MB = 1_000_000;
const TICKS_PER_SECOND = 100; // Linux USER_HZ, the unit of /proc/<pid>/stat times
export const RAW_APP = 'fhirhose-bench-raw';

export interface RawResult {
  rows: number;
  /** CPU seconds of the PostgreSQL backends that did the work. */
  pg: number;
}

/**
 * The data set's tables emptied, filled by the raw limit's COPY + upsert (two connections) and
 * VACUUM ANALYZEd: what a dump reads after a migration. Returns the seconds the fill took.
 */
export async function fillTables(sql: Sql, databaseUrl: string, types: Pick<TypeData, 'type' | 'ndjson'>[]): Promise<number> {
  const names = types.map((t) => t.type);
  await truncate(sql, names);
  const seconds = await timed(() => rawLoad(databaseUrl, types, 2));
  for (const type of names) await sql.unsafe(`vacuum analyze ${ident(tableOf(type))}`);
  return seconds;
}

/** Raw COPY + upsert of every type, on `connections` connections at once. */
export async function rawLoad(databaseUrl: string, types: Pick<TypeData, 'type' | 'ndjson'>[], connections: 1 | 2): Promise<RawResult> {
  const shares = Array.from({ length: connections }, () => [] as { type: string; ndjson: Buffer }[]);
  for (const t of types) split(t.ndjson, connections).forEach((ndjson, i) => { if (ndjson.length > 0) shares[i]!.push({ type: t.type, ndjson }); });
  const results = await Promise.all(shares.map((share, i) => loadWorker(databaseUrl, share, i)));
  return sum(results);
}

async function loadWorker(databaseUrl: string, types: { type: string; ndjson: Buffer }[], worker: number): Promise<RawResult> {
  const sql = connect(databaseUrl, { max: 1, applicationName: RAW_APP });
  const stage = `raw_stage_${worker}`;
  try {
    return await sql.begin(async (tx) => {
      const [{ pid }] = (await tx`select pg_backend_pid() as pid`) as unknown as [{ pid: number }];
      const before = processSeconds(pid);
      // Unlogged, as $load's own staging: faster than a temporary table (8 MB temp_buffers spill).
      await tx.unsafe(`drop table if exists ${stage}`);
      await tx.unsafe(`create unlogged table ${stage} (r jsonb)`);
      let rows = 0;
      for (const { type, ndjson } of types) {
        // CSV with delimiter and quote characters that JSON text never holds: no escaping needed
        const stream = await tx.unsafe(`copy ${stage} from stdin with (format csv, delimiter e'\\x02', quote e'\\x01')`).writable();
        for (let offset = 0; offset < ndjson.length; offset += MB) {
          if (!stream.write(ndjson.subarray(offset, offset + MB))) await new Promise((r) => stream.once('drain', r));
        }
        await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
        const result = await tx.unsafe(
          `insert into ${ident(tableOf(type))} (id, txid, resource_type, status, resource)
           select r->>'id', nextval('transaction_id_seq'), '${type}', 'created', r - 'id' - 'resourceType' from ${stage}
           on conflict (id) do update set txid = excluded.txid, ts = now(), status = 'updated', resource = excluded.resource`,
        );
        rows += result.count;
        await tx.unsafe(`truncate ${stage}`);
      }
      await tx.unsafe(`drop table ${stage}`);
      return { rows, pg: processSeconds(pid) - before };
    });
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Raw `COPY (select resource …) TO STDOUT` of every type's table, on `connections` connections at once. */
export async function rawDump(databaseUrl: string, types: string[], connections: 1 | 2): Promise<RawResult> {
  const workers = Array.from({ length: connections }, (_, half) => dumpWorker(databaseUrl, types, connections === 1 ? undefined : half));
  return sum(await Promise.all(workers));
}

async function dumpWorker(databaseUrl: string, types: string[], half: number | undefined): Promise<RawResult> {
  const sql = connect(databaseUrl, { max: 1, applicationName: RAW_APP });
  try {
    const [me] = await sql`select pg_backend_pid() as pid`;
    const pid = Number(me!.pid);
    const before = processSeconds(pid);
    let rows = 0;
    for (const type of types) {
      const table = ident(tableOf(type));
      let where = '';
      if (half !== undefined) {
        const [size] = await sql.unsafe(`select pg_relation_size('${table.replaceAll("'", "''")}') / current_setting('block_size')::int as pages`);
        const middle = Math.floor(Number(size!.pages) / 2);
        where = half === 0 ? ` where ctid < '(${middle},0)'` : ` where ctid >= '(${middle},0)'`;
      }
      const stream = await sql.unsafe(`copy (select resource from ${table}${where}) to stdout`).readable();
      for await (const chunk of stream) rows += countLines(chunk as Buffer);
      // postgres.js can leave the socket paused after a COPY (porsager/postgres#499, see
      // src/storage/copy-out.ts resumeSocket): resume it, or the next query hangs
      (stream as unknown as { _read(size: number): void })._read(0);
    }
    return { rows, pg: processSeconds(pid) - before };
  } finally {
    await sql.end({ timeout: 1 });
  }
}

function sum(results: RawResult[]): RawResult {
  return results.reduce((a, b) => ({ rows: a.rows + b.rows, pg: a.pg + b.pg }), { rows: 0, pg: 0 });
}

export function countLines(chunk: Uint8Array): number {
  const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  let n = 0;
  for (let i = buf.indexOf(0x0a); i >= 0; i = buf.indexOf(0x0a, i + 1)) n++;
  return n;
}

/**
 * CPU seconds so far of the server process and of its PostgreSQL backends: every application name
 * the server uses (`fhirhose`, `fhirhose jobs`, `fhirhose-read` …), not the bench's own.
 */
export async function serverCpu(sql: Sql, serverPid: number): Promise<{ server: number; backends: Map<number, number> }> {
  const rows = await sql`select pid from pg_stat_activity
    where application_name like 'fhirhose%' and application_name not like 'fhirhose-bench%'`;
  return { server: processSeconds(serverPid), backends: new Map(rows.map((r) => [Number(r.pid), processSeconds(Number(r.pid))])) };
}

/** CPU seconds used between two backend maps (backends started in between count whole). */
export function backendsBetween(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, seconds] of after) total += seconds - (before.get(pid) ?? 0);
  return total;
}

export function processSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return 0; // not Linux, or the backend is gone
  }
}

/** CPU seconds so far of each thread of a process, threads of the same name (digits ignored) summed. */
export function threadSeconds(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[] = [];
  try { tids = fs.readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\d+/g, '#');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND);
    } catch { /* the thread is gone */ }
  }
  return out;
}
