/**
 * Client and AccessPolicy rows, as the auth layer needs them, each with the snapshot it was read
 * in: a cache entry stays valid across a change notification (`Client:<xid>`, migration 8) only
 * when its snapshot already saw that transaction.
 */
import type { Sql } from './db.ts';
import type { Json } from '../fhir/resource.ts';

/** A PostgreSQL snapshot (`pg_current_snapshot()`): which transactions' writes it sees. */
export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  running: Set<bigint>;
}

/** `xmin:xmax:xip,…` as `pg_snapshot` prints it. */
export function parseSnapshot(text: string): Snapshot {
  const [xmin = '0', xmax = '0', xip = ''] = text.split(':');
  return { xmin: BigInt(xmin), xmax: BigInt(xmax), running: new Set(xip ? xip.split(',').map(BigInt) : []) };
}

/** Did a read in `snapshot` see the committed writes of transaction `xid`? */
export function sees(snapshot: Snapshot, xid: bigint): boolean {
  return xid < snapshot.xmin || (xid < snapshot.xmax && !snapshot.running.has(xid));
}

export async function clientSecretHash(sql: Sql, clientId: string): Promise<{ hash: string | undefined; snapshot: Snapshot }> {
  const [row] = await sql`select (select resource->>'secret' from "client" where id = ${clientId}) as secret,
    pg_current_snapshot()::text as snapshot`;
  return { hash: row!.secret ?? undefined, snapshot: parseSnapshot(row!.snapshot as string) };
}

export async function listPolicies(sql: Sql): Promise<{ policies: { id: string; resource: Record<string, Json> }[]; snapshot: Snapshot }> {
  const [row] = await sql`select pg_current_snapshot()::text as snapshot,
    (select coalesce(jsonb_agg(jsonb_build_object('id', id, 'resource', resource) order by id), '[]') from "accesspolicy") as policies`;
  return { policies: row!.policies as { id: string; resource: Record<string, Json> }[], snapshot: parseSnapshot(row!.snapshot as string) };
}
