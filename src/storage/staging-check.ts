/**
 * Checks run on a filled staging table (SPEC §7 `validation`): the references check in SQL, and a
 * cursor over the staged rows for the background (`async`) schema check.
 * A row found invalid gets its reason in the `error` column; `mergeStaging` skips such rows.
 */
import type { AnySql } from './db.ts';
import { ident } from './db.ts';
import { isKnownType, tableOf } from '../fhir/types.ts';
import type { Json } from '../fhir/resource.ts';

export interface LineError {
  line: number;
  message: string;
}

export interface CheckResult {
  /** The first `limit` invalid lines, in line order. */
  errors: LineError[];
  errorCount: number;
  /** Rows marked invalid, per type (to subtract from the staged counts). */
  perType: Record<string, number>;
}

/**
 * Marks every staged row with a literal reference (`refs` column) that resolves neither to a
 * stored resource nor to a row of the same staging table. One anti-join per referenced type, so
 * PostgreSQL can choose hash joins; memory in Bun is bounded by `limit`.
 */
export async function checkStagingRefs(tx: AnySql, table: string, options: { limit: number }): Promise<CheckResult> {
  const stage = ident(table);
  const referenced = await tx.unsafe<{ type: string }[]>(
    `select distinct split_part(ref, '/', 1) as type from ${stage}, unnest(refs) as ref where refs is not null`,
  );
  const types = referenced.map((r) => r.type).filter(isKnownType);
  if (types.length > 0) {
    const missing = types.map((type) => `
      select r.line, r.ref from refs r
      where r.type = '${type}'
        and not exists (select 1 from ${ident(tableOf(type))} t where t.id = r.id)
        and not exists (select 1 from ${stage} s where s.type = r.type and s.id = r.id)`).join('\n union all');
    await tx.unsafe(
      `with refs as (
         select line, ref, split_part(ref, '/', 1) as type, split_part(ref, '/', 2) as id
         from ${stage}, unnest(refs) as ref where refs is not null
       ), missing as (${missing}),
       per_line as (
         select line, 'reference ' || string_agg(ref, ', ' order by ref) ||
           case when count(*) > 1 then ' do' else ' does' end ||
           ' not resolve to a stored resource or one in this load' as message
         from missing group by line
       )
       update ${stage} s set error = p.message from per_line p where s.line = p.line and s.error is null`,
    );
  }
  return stagingErrors(tx, table, options);
}

/** The rows marked invalid: the first `limit` by line, their count, and the count per type. */
export async function stagingErrors(tx: AnySql, table: string, options: { limit: number }): Promise<CheckResult> {
  const stage = ident(table);
  const errors = await tx.unsafe<LineError[]>(
    `select line, error as message from ${stage} where error is not null order by line limit ${Math.trunc(options.limit)}`,
  );
  const counts = await tx.unsafe<{ type: string; n: number }[]>(`select type, count(*)::int as n from ${stage} where error is not null group by type`);
  return {
    errors: errors.map(({ line, message }) => ({ line, message })),
    errorCount: counts.reduce((n, r) => n + r.n, 0),
    perType: Object.fromEntries(counts.map((r) => [r.type, r.n])),
  };
}

/** Records reasons for rows by line number (the background schema check). */
export async function markStagingErrors(sql: AnySql, table: string, errors: LineError[]): Promise<void> {
  if (errors.length === 0) return;
  await sql.unsafe(
    `update ${ident(table)} s set error = e.message
     from unnest($1::int[], $2::text[]) as e(line, message) where s.line = e.line and s.error is null`,
    [errors.map((e) => e.line), errors.map((e) => e.message)] as never[],
  );
}

export interface StagedResource {
  line: number;
  type: string;
  id: string;
  resource: Record<string, Json>;
}

/**
 * The staged rows after line `afterLine`, in line order, at most `limit`: one short statement per
 * page (no cursor held open), so a background check can stop anywhere and resume from a line.
 */
export async function readStagingPage(sql: AnySql, table: string, options: { afterLine: number; limit: number }): Promise<StagedResource[]> {
  return await sql.unsafe<StagedResource[]>(
    `select line, type, id, resource from ${ident(table)} where line > $1 order by line limit ${Math.trunc(options.limit)}`,
    [options.afterLine],
  );
}

/** An index on the staging table's line numbers, for paging through it (idempotent). */
export async function indexStagingLines(sql: AnySql, table: string): Promise<void> {
  await sql.unsafe(`create index if not exists ${ident(`${table.slice(0, 50)}_line`)} on ${ident(table)} (line)`);
}

export async function stagingExists(sql: AnySql, table: string): Promise<boolean> {
  const [row] = await sql<{ found: boolean }[]>`select to_regclass(${ident(table)}) is not null as found`;
  return row?.found === true;
}

export async function countStaging(sql: AnySql, table: string): Promise<number> {
  const [row] = await sql.unsafe<{ n: number }[]>(`select count(*)::int as n from ${ident(table)}`);
  return row?.n ?? 0;
}
