/**
 * The rows of a `$dump` (SPEC §5): one `COPY … TO STDOUT (FORMAT binary)` of a resource table,
 * optionally only rows created after an instant. Binary, and only plain columns: PostgreSQL's
 * share of the work is then exactly what a raw `COPY (select resource …)` costs (jsonb → text);
 * src/operations/dump-lines.ts turns the tuples into FHIR lines.
 */
import type { Sql } from './db.ts';
import { ident } from './db.ts';
import { copyOut } from './copy-out.ts';
import { tableOf } from '../fhir/types.ts';

/** The tuple layout: id text, txid int8, ts timestamptz, resource jsonb. */
export const DUMP_FIELD_COUNT = 4;

/** What `since` may look like by the time it reaches SQL (validated and normalised upstream). */
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

export interface DumpQuery {
  type: string;
  /** A normalised ISO instant: only rows with `cts` after it. */
  since?: string;
}

/** Opens the COPY; rejects (before any byte is streamed) when PostgreSQL refuses it. */
export async function openDump(sql: Sql, query: DumpQuery): Promise<ReadableStream<Uint8Array>> {
  let where = '';
  if (query.since !== undefined) {
    // COPY runs over the simple protocol (no parameters), so the value is inlined; the pattern
    // admits digits and - : . T Z + only, so it cannot leave its quotes.
    if (!INSTANT.test(query.since)) throw new Error(`not a normalised instant: ${query.since}`);
    where = ` where cts > '${query.since}'::timestamptz`;
  }
  return copyOut(sql, `copy (select id, txid, ts, resource from ${ident(tableOf(query.type))}${where}) to stdout (format binary)`);
}
