/**
 * How one type's staged rows are upserted into its resource table (SPEC §7 `method`): set-based
 * for `copy`, keyset batches for `insert`. Called by `mergeStaging` (staging.ts) inside the load's
 * transaction; both leave the same final state.
 */
import type { AnySql } from './db.ts';
import { ident, pgCode } from './db.ts';
import { historyTableOf, tableOf } from '../fhir/types.ts';
import type { Version } from './versions.ts';

// Versions of one id only grow (as in storage/resources.ts): rows inserted by hand may carry txids
// above the sequence, so an overwritten row's next txid is at least its previous one + 1. The txid
// and ts come in as parameters $2, $3 (storage/versions.ts), and DO UPDATE SET uses only excluded.*
// and columns: nothing a Citus-distributed table refuses (SPEC §11).
const UPSERT_TAIL = `on conflict (id) do update set txid = greatest(excluded.txid, t.txid + 1), ts = excluded.ts,
  resource_type = excluded.resource_type, status = 'updated', resource = excluded.resource`;
const INSERT_HEAD = (type: string) => `insert into ${ident(tableOf(type))} as t (id, txid, cts, ts, resource_type, status, resource)`;
const SELECT_VERSIONED = `select id, $2::bigint, $3::text::timestamptz, $3::text::timestamptz, $1, 'created'::resource_status, resource`;

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
 *
 * A plain INSERT is tried first when `insertFirst` says so ('when-empty': when the type's table
 * has no row, as in a first migration): ON CONFLICT's speculative insertion cost about a fifth of
 * the merge of 200,000 small rows (BENCHMARKS.md, $load), and with no current row there is nothing
 * to archive either. Any id that exists (another load committed it meanwhile, the table was not
 * empty, or the source repeats it) fails that INSERT with 23505 inside its savepoint, and the
 * upsert above runs instead: the same final state; `conflicted` then tells the caller.
 */
export async function mergeSetBased(
  tx: AnySql, table: string, type: string, options: { update: boolean; version: Version; insertFirst?: boolean | 'when-empty' },
): Promise<{ count: number; conflicted: boolean }> {
  const source = `${ident(table)} where type = $1 and error is null`;
  const parameters = [type, options.version.txid, options.version.ts];
  const run = async (sql: AnySql, rows: string) => {
    if (options.update) await sql.unsafe(historySql(table, type, `select id from ${source}`), [type]);
    const result = await sql.unsafe(`${INSERT_HEAD(type)} ${SELECT_VERSIONED} from ${rows} ${UPSERT_TAIL}`, parameters);
    return result.count;
  };
  // postgres.js fails the whole transaction on any failed query outside `savepoint()`.
  let conflicted = false;
  if ('savepoint' in tx) {
    let insertFirst = options.insertFirst ?? 'when-empty';
    if (insertFirst === 'when-empty') {
      const [current] = await tx.unsafe(`select exists (select 1 from ${ident(tableOf(type))}) as any`);
      insertFirst = current?.any === false;
    }
    if (insertFirst) {
      try {
        const count = await tx.savepoint(async (sp) => (await sp.unsafe(`${INSERT_HEAD(type)} ${SELECT_VERSIONED} from ${source}`, parameters)).count);
        return { count, conflicted };
      } catch (err) {
        if (pgCode(err) !== '23505') throw err;
        conflicted = true;
      }
    }
    try {
      return { count: await tx.savepoint((sp) => run(sp, source)), conflicted };
    } catch (err) {
      if (pgCode(err) !== '21000') throw err;
    }
  }
  return { count: await run(tx, `(select distinct on (id) id, resource from ${source} order by id, line desc) as last_lines`), conflicted };
}

/**
 * `method: insert`: keyset batches over an index of the staging table, last line per id. With
 * `update`, a batch's current versions go to history in a statement of their own before the
 * upsert: one statement of modifying CTEs over a table and its history is what Citus refuses.
 */
export async function mergeBatched(tx: AnySql, table: string, type: string, options: { update: boolean; batchRows: number; version: Version }): Promise<number> {
  await tx.unsafe(`create index if not exists ${ident(`${table}_type_id_line`)} on ${ident(table)} (type, id, line desc)`);
  const batch = (after: string) => `select distinct on (id) id, resource from ${ident(table)}
      where type = $1 and error is null and id > ${after} order by id, line desc limit ${options.batchRows}`;
  const history = historySql(table, type, `select id from (${batch('$2')}) as batch`);
  const statement = `with batch as (${batch('$4')}), written as (
      ${INSERT_HEAD(type)} ${SELECT_VERSIONED} from batch ${UPSERT_TAIL} returning 1
    )
    select (select max(id) from batch) as last, (select count(*) from written)::int as n`;
  let total = 0;
  let after = '';
  for (;;) {
    if (options.update) await tx.unsafe(history, [type, after]);
    const [row] = await tx.unsafe(statement, [type, options.version.txid, options.version.ts, after]);
    if (!row || row.last === null) return total;
    total += row.n as number;
    after = row.last as string;
  }
}
