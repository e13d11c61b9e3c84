/**
 * Deletes of many ids of one type in the caller's transaction (SPEC §13: a pulled manifest's
 * `deleted` files), with the conventions of `deleteResource` (resources.ts): the current version
 * goes to history, a `deleted` marker version follows it, the row leaves the table. One version
 * (txid, ts) for the whole batch; an id that is not there is skipped, so a replayed batch deletes
 * nothing twice. Three statements, each writing one table (SPEC §11).
 */
import type { AnySql } from './db.ts';
import { historyTableOf, tableOf } from '../fhir/types.ts';
import { liftSequence, takeVersion } from './versions.ts';

/** Deletes `ids` of `type`; the number of resources that were there and are gone now. */
export async function deleteResources(tx: AnySql, type: string, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const table = tx(tableOf(type));
  const history = tx(historyTableOf(type));
  const version = await takeVersion(tx);
  const [top] = await tx<{ floor: string | null }[]>`
    select max(txid)::text as floor from (select txid from ${table} where id = any(${ids}::text[]) for update) locked`;
  if (top?.floor === null || top?.floor === undefined) return 0;
  await tx`insert into ${history} select * from ${table} where id = any(${ids}::text[]) on conflict do nothing`;
  // versions of one id only grow: a row whose txid is at or above the taken one gets txid + 1
  await tx`
    insert into ${history} (id, txid, cts, ts, resource_type, status, resource)
    select id, greatest(${version.txid}::bigint, txid + 1), cts, ${version.ts}::text::timestamptz, resource_type, 'deleted', resource
    from ${table} where id = any(${ids}::text[])`;
  if (BigInt(top.floor) >= BigInt(version.txid)) await liftSequence(tx, BigInt(top.floor) + 1n);
  const gone = await tx`delete from ${table} where id = any(${ids}::text[])`;
  return gone.count;
}
