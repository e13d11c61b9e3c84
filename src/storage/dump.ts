/**
 * The rows of a `$dump` (SPEC §5): `COPY (select id, txid, ts, resource …) TO STDOUT (FORMAT
 * binary)` of a resource table, optionally only rows created after an instant. Binary, and only
 * plain columns: PostgreSQL's share of the work is exactly what a raw `COPY (select resource …)`
 * costs (jsonb → text), and src/operations/dump-lines.ts turns the tuples into FHIR lines.
 *
 * A table of 8 MB or more is read by two COPYs at once, each over half of its pages (a TID range
 * scan), so that two PostgreSQL backends turn jsonb into text in parallel. Measured on the 2-core
 * machine of BENCHMARKS.md with 200,000 Synthea Patients (700 MB): one binary COPY read in 11.1–12.8
 * s, two halves together in 6.3–8.4 s. Both run in REPEATABLE READ transactions on one exported
 * snapshot, so the halves are one consistent picture of the table even under concurrent writes.
 */
import type { Sql } from './db.ts';
import { ident } from './db.ts';
import { copyOut, release, reserveConnection, type StreamConnection } from './copy-out.ts';
import { tableOf } from '../fhir/types.ts';
import { isInstantText } from '../fhir/datetime.ts';

/** The tuple layout: id text, txid int8, ts timestamptz, resource jsonb. */
export const DUMP_FIELD_COUNT = 4;

const SPLIT_MIN_BYTES = 8 << 20;
const SNAPSHOT = 'begin transaction isolation level repeatable read, read only';

/** Connections held by split dumps, per pool: they may take at most half of it (see openDump). */
const held = new WeakMap<Sql, number>();

export interface DumpQuery {
  type: string;
  /** A normalised ISO instant: only rows with `cts` after it. */
  since?: string;
  /** The pool's size: split dumps together hold at most half of it. */
  poolSize: number;
}

/**
 * Opens the COPY (or two, see above); rejects, before any byte is streamed, when PostgreSQL refuses.
 * Each stream is a complete binary COPY of its own (header, tuples, trailer), and each chunk is
 * valid only until that stream's next read (copy-out.ts `reuseBuffer`).
 */
export async function openDump(sql: Sql, query: DumpQuery): Promise<ReadableStream<Uint8Array>[]> {
  const table = ident(tableOf(query.type));
  let where = '';
  if (query.since !== undefined) {
    // COPY runs over the simple protocol (no parameters), so the value is inlined; an instant as
    // startInstant writes it has digits and - : . T Z + only, so it cannot leave its quotes.
    if (!isInstantText(query.since)) throw new Error(`not a normalised instant: ${query.since}`);
    where = `cts > '${query.since}'::timestamptz`;
  }
  const statement = (condition: string) =>
    `copy (select id, txid, ts, resource from ${table}${condition ? ` where ${condition}` : ''}) to stdout (format binary)`;

  const [size] = await sql<{ bytes: string; block: number }[]>`
    select pg_relation_size(${table}::regclass) as bytes, current_setting('block_size')::int as block`;
  const pages = Math.floor(Number(size!.bytes) / size!.block);
  const taken = held.get(sql) ?? 0;
  // Two connections per split dump, split dumps at most half the pool: a dump holding its first
  // connection while it waits for the second can then never starve the pool into a deadlock.
  if (Number(size!.bytes) < SPLIT_MIN_BYTES || taken + 2 > Math.floor(query.poolSize / 2)) {
    return [await copyOut(sql, statement(where), { reuseBuffer: true })];
  }
  const adjust = (delta: number) => held.set(sql, (held.get(sql) ?? 0) + delta);
  adjust(+2);
  const half = Math.floor(pages / 2);
  const and = where ? `${where} and ` : '';
  const pending: StreamConnection[] = [];
  const streams: ReadableStream<Uint8Array>[] = [];
  try {
    pending.push(await reserveConnection(sql, SNAPSHOT));
    const [row] = await pending[0]!.conn`select pg_export_snapshot() as snapshot`;
    pending.push(await reserveConnection(sql, SNAPSHOT));
    await pending[1]!.conn.unsafe(`set transaction snapshot '${String(row!.snapshot)}'`);
    for (const range of [`ctid < '(${half},0)'`, `ctid >= '(${half},0)'`]) {
      // from here on copyOut owns the connection: it releases it, even when the COPY fails
      streams.push(await copyOut(sql, statement(and + range), { connection: pending.shift()!, reuseBuffer: true }));
    }
  } catch (err) {
    for (const stream of streams) await stream.cancel().catch(() => {});
    for (const c of pending) release(c, err);
    adjust(-2);
    throw err;
  }
  return streams.map((stream) => onFinish(stream, () => adjust(-1)));
}

/** The same stream, calling `finish` once when it ends, fails or is cancelled. */
function onFinish(stream: ReadableStream<Uint8Array>, finish: () => void): ReadableStream<Uint8Array> {
  let called = false;
  const once = () => { if (!called) { called = true; finish(); } };
  const reader = stream.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) { once(); return controller.close(); }
          controller.enqueue(value);
        } catch (err) {
          once();
          throw err;
        }
      },
      cancel(reason) {
        once();
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
