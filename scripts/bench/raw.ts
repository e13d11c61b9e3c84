/**
 * The raw baseline shared by the $load and $import parts (SPEC §9): the source already gunzipped in
 * memory, raw `COPY` into a jsonb staging table, one set-based upsert into `patient`, and the CPU
 * accounting both parts print.
 */
import fs from 'node:fs';
import type { Sql } from '../../src/storage/db.ts';
import type { BenchEnv } from './common.ts';

const MB = 1_000_000;
const TICKS_PER_SECOND = 100; // Linux USER_HZ, the unit of /proc/<pid>/stat times

/**
 * The baseline: raw bytes → COPY (no escaping needed with these CSV delimiters) → one upsert.
 * Returns the CPU seconds of its PostgreSQL backend.
 */
export async function rawLoad(sql: Sql, plain: Buffer, rows: number): Promise<number> {
  let cpu = 0;
  const loaded = await sql.begin(async (tx) => {
    const [{ pid }] = (await tx`select pg_backend_pid() as pid`) as unknown as [{ pid: number }];
    cpu = -processSeconds(pid);
    // Unlogged, as $load's own staging: faster than a temporary table (8 MB temp_buffers spill).
    await tx.unsafe('create unlogged table raw_stage (r jsonb)');
    const stream = await tx.unsafe(`copy raw_stage from stdin with (format csv, delimiter e'\\x02', quote e'\\x01')`).writable();
    for (let offset = 0; offset < plain.length; offset += MB) {
      if (!stream.write(plain.subarray(offset, offset + MB))) await new Promise((r) => stream.once('drain', r));
    }
    await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
    const result = await tx.unsafe(
      `insert into patient (id, txid, resource_type, status, resource)
       select r->>'id', nextval('transaction_id_seq'), 'Patient', 'created', r - 'id' - 'resourceType' from raw_stage
       on conflict (id) do update set txid = excluded.txid, ts = now(), status = 'updated', resource = excluded.resource`,
    );
    await tx.unsafe('drop table raw_stage');
    cpu += processSeconds(pid);
    return result.count;
  });
  if (loaded !== rows) throw new Error(`raw load wrote ${loaded} rows for ${rows}`);
  return cpu;
}

/** CPU seconds so far: the server process, its PostgreSQL backends, and the bench's own backends. */
export async function cpuSeconds(env: BenchEnv): Promise<{ server: number; backends: number; bench: number }> {
  const rows = await env.sql`select pid, application_name as app from pg_stat_activity where application_name in ('fhirhose', 'fhirhose-bench')`;
  const sum = (app: string) => rows.filter((r) => r.app === app).reduce((n, r) => n + processSeconds(r.pid as number), 0);
  return { server: processSeconds(env.server.pid), backends: sum('fhirhose'), bench: sum('fhirhose-bench') };
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
