/**
 * How one type's staged rows are upserted into its resource table (SPEC §7 `method`): set-based
 * for `copy`, keyset batches for `insert`. Called by `mergeStaging` (staging.ts) inside the load's
 * transaction; both leave the same final state.
 */
import type { AnySql } from './db.ts';
import { ident, pgCode } from './db.ts';
import { historyTableOf, tableOf } from '../fhir/types.ts';

// Versions of one id only grow (as in storage/resources.ts): rows inserted by hand may carry txids
// above the sequence, so an overwritten row's next txid is at least its previous one + 1.
const UPSERT_TAIL = `on conflict (id) do update set txid = greatest(excluded.txid, t.txid + 1), ts = now(),
  resource_type = excluded.resource_type, status = 'updated', resource = excluded.resource`;

// A version already in history (same id and txid) is already archived: nothing to add.
function historySql(table: string, type: string, ids: string): string {
  return `insert into ${ident(historyTableOf(type))} select t.* from ${ident(tableOf(type))} t where t.id in (${ids})
    on conflict do nothing`;
}

/**
 * Optimistic: a source without duplicated ids (the usual case) is upserted straight from the
 * staging table, with no sort. A duplicate makes PostgreSQL refuse ("ON CONFLICT DO UPDATE command
 * cannot affect row a second time", SQLSTATE 21000); then the same is redone with
 * DISTINCT ON (id) … ORDER BY id, line DESC, so the last line wins.
 */
export async function mergeSetBased(tx: AnySql, table: string, type: string, update: boolean): Promise<number> {
  const source = `${ident(table)} where type = $1 and error is null`;
  const run = async (sql: AnySql, rows: string) => {
    if (update) await sql.unsafe(historySql(table, type, `select id from ${source}`), [type]);
    const result = await sql.unsafe(
      `insert into ${ident(tableOf(type))} as t (id, txid, resource_type, status, resource)
       select id, nextval('transaction_id_seq'), $1, 'created', resource from ${rows} ${UPSERT_TAIL}`,
      [type],
    );
    return result.count;
  };
  // postgres.js fails the whole transaction on any failed query outside `savepoint()`.
  if ('savepoint' in tx) {
    try {
      return await tx.savepoint((sp) => run(sp, source));
    } catch (err) {
      if (pgCode(err) !== '21000') throw err;
    }
  }
  return run(tx, `(select distinct on (id) id, resource from ${source} order by id, line desc) as last_lines`);
}

/** `method: insert`: keyset batches over an index of the staging table, last line per id. */
export async function mergeBatched(tx: AnySql, table: string, type: string, options: { update: boolean; batchRows: number }): Promise<number> {
  await tx.unsafe(`create index if not exists ${ident(`${table}_type_id_line`)} on ${ident(table)} (type, id, line desc)`);
  const history = options.update ? `, moved as (${historySql(table, type, 'select id from batch')})` : '';
  const statement = `with batch as (
      select distinct on (id) id, resource from ${ident(table)}
      where type = $1 and error is null and id > $2 order by id, line desc limit ${options.batchRows}
    )${history}, written as (
      insert into ${ident(tableOf(type))} as t (id, txid, resource_type, status, resource)
      select id, nextval('transaction_id_seq'), $1, 'created', resource from batch ${UPSERT_TAIL} returning 1
    )
    select (select max(id) from batch) as last, (select count(*) from written)::int as n`;
  let total = 0;
  let after = '';
  for (;;) {
    const [row] = await tx.unsafe(statement, [type, after]);
    if (!row || row.last === null) return total;
    total += row.n as number;
    after = row.last as string;
  }
}
