/**
 * The version a write gives the rows it writes: a txid from `transaction_id_seq` and a timestamp
 * (`ts`, and `cts` of new rows), taken by a statement of their own before the write and passed to
 * it as parameters. So no resource-table write calls `nextval()` or `now()` itself, and none
 * returns `to_char(…)`: the shapes a Citus-distributed table refuses or evaluates per shard
 * (SPEC §11; README "Citus"). One version per statement also costs less than one `nextval()`
 * per row in a set-based merge.
 */
import type { AnySql } from './db.ts';

export interface Version {
  /** From transaction_id_seq (bigint as text). */
  txid: string;
  /** The transaction's `now()`, UTC, microseconds: `2024-01-31T12:00:00.123456Z`. Pass it as `$n::text::timestamptz`:
   *  postgres.js serialises a timestamptz parameter through a JS Date, which drops the microseconds. */
  ts: string;
}

/** An SQL expression: a timestamptz as a FHIR instant, UTC, microseconds (meta.lastUpdated, $dump). */
export function instantText(expression: string): string {
  return `to_char(${expression} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
}

/** Takes the next txid and the transaction's timestamp, on the coordinator (no table involved). */
export async function takeVersion(tx: AnySql): Promise<Version> {
  const [row] = await tx<Version[]>`select nextval('transaction_id_seq')::text as txid, ${tx.unsafe(instantText('now()'))} as ts`;
  return row!;
}

/**
 * The txid for a new version of a row whose previous version is `floor`: the taken one, unless a
 * row inserted by hand carries a txid at or above it (SPEC §2 demo: txid = id up to 100,000); then
 * `floor + 1`, and the sequence is lifted past it so later writes start above.
 */
export async function txidAbove(tx: AnySql, taken: string, floor: string | number | bigint): Promise<string> {
  if (BigInt(taken) > BigInt(floor)) return taken;
  const next = BigInt(floor) + 1n;
  await liftSequence(tx, next);
  return next.toString();
}

/** Makes sure `transaction_id_seq` hands out values above `txid` from now on. */
export async function liftSequence(tx: AnySql, txid: bigint): Promise<void> {
  const value = txid.toString();
  await tx`select setval('transaction_id_seq', ${value}::bigint) where ${value}::bigint > (select last_value from transaction_id_seq)`;
}
