/**
 * `POST /$dump-sql` (SPEC §6): a read-only query streamed as csv/tsv, ndjson, SQL inserts or an
 * Elasticsearch bulk body. The query is declared as a cursor and its first rows fetched before
 * the response starts, so a bad, writing, smuggling or timed-out query is a 400 with PostgreSQL's
 * message, never a 200 with error text. Later rows are fetched one batch ahead of the client.
 */
import { z } from 'zod';
import type { OperationContext } from './context.ts';
import { FORMATS, rowFormatter, type FormatOptions } from './dump-sql-formats.ts';
import { requestError } from './request-issue.ts';
import { invalid, OperationOutcomeError } from '../fhir/outcome.ts';
import { pgCode, pgMessage } from '../storage/db.ts';
import { openReadOnlyCursor, type RawRow, type SqlCursor } from '../storage/sql-cursor.ts';
import { bulkReader, replicaFailure } from './bulk-reader.ts';

const body = z.strictObject({
  query: z.string().trim().min(1, 'must be a non-empty SQL query'),
  format: z.enum(FORMATS).optional(),
  header: z.boolean().optional(),
  delimiter: z.string().length(1, 'must be one character').refine((d) => !/["\r\n]/.test(d), 'cannot be a quote or a line break').optional(),
  table: z.string().min(1).max(200).optional(),
  index: z.string().min(1).max(255).optional(),
});

export interface DumpSqlRequest extends FormatOptions {
  query: string;
}

/** The body (JSON or YAML, already parsed) and `?_format=` → a validated request; 400 otherwise. */
export function dumpSqlRequest(input: unknown, formatParam: string | null): DumpSqlRequest {
  const parsed = body.safeParse(input);
  if (!parsed.success) throw requestError('$dump-sql', parsed.error);
  const b = parsed.data;
  if (formatParam !== null && !(FORMATS as readonly string[]).includes(formatParam)) {
    throw invalid(`Parameter _format must be one of ${FORMATS.join(', ')}, got ${JSON.stringify(formatParam)}`);
  }
  const format = (formatParam as FormatOptions['format'] | null) ?? b.format ?? 'csv';
  if (format === 'sql' && b.table === undefined) {
    throw invalid('Invalid $dump-sql request: format sql needs "table", the table the INSERT statements write to');
  }
  return { query: b.query, format, header: b.header ?? false, delimiter: b.delimiter ?? '\t', table: b.table, index: b.index };
}

export interface DumpSqlResponse {
  body: ReadableStream<Uint8Array>;
  headers: Record<string, string>;
}

export async function dumpSql(ctx: OperationContext, request: DumpSqlRequest): Promise<DumpSqlResponse> {
  const reader = await bulkReader(ctx);
  // a connection of its own, bounded per row (FHIRHOSE_SQL_MAX_VALUE_BYTES), on the primary
  // (storage/pools.ts) or on the read replica (storage/replica.ts)
  const own = reader === ctx.sql ? ctx.pools?.sqlReader() : reader === ctx.replica?.sql ? ctx.replica.sqlReader() : undefined;
  let opened: { cursor: SqlCursor; first: RawRow[] };
  try {
    opened = await openReadOnlyCursor(own ?? reader, request.query, { timeoutMs: ctx.config.sqlTimeoutMs, role: ctx.sqlRole });
  } catch (err) {
    await own?.end({ timeout: 1 });
    const failure = replicaFailure(ctx, reader, err);
    throw failure === err ? queryError(err) : failure;
  }
  const { first } = opened;
  const cursor = { ...opened.cursor, close: async () => { await opened.cursor.close(); await own?.end({ timeout: 1 }); } };
  const formatter = rowFormatter(cursor.columns, request);
  const encoder = new TextEncoder();
  let next: Promise<RawRow[]> | undefined = cursor.next();
  next.catch(() => {}); // observed in pull(); a client gone before that must not make it unhandled
  let head: string | undefined = formatter.head + formatter.rows(first);

  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (head !== undefined) {
          const text = head;
          head = undefined;
          if (text) return controller.enqueue(encoder.encode(text));
        }
        for (;;) {
          let rows: RawRow[];
          try {
            rows = await next!;
          } catch (err) {
            ctx.log(`POST /$dump-sql aborted mid-stream: ${pgCode(err) === 'MESSAGE_TOO_LARGE' ? tooLarge(err) : pgMessage(err)}`);
            await cursor.close();
            throw err;
          }
          if (rows.length === 0) {
            await cursor.close();
            return controller.close();
          }
          next = cursor.next();
          next.catch(() => {});
          const text = formatter.rows(rows);
          if (text) return controller.enqueue(encoder.encode(text));
        }
      },
      async cancel() {
        await cursor.close();
      },
    },
    { highWaterMark: 0 },
  );
  return { body: stream, headers: { 'Content-Type': formatter.contentType, 'Cache-Control': 'no-store' } };
}

/**
 * PostgreSQL refusing the user's query is the client's error (400, with PostgreSQL's message:
 * SPEC §6 asks for it); a database that is down or broken is not.
 */
function queryError(err: unknown): unknown {
  const code = pgCode(err);
  if (code === 'MESSAGE_TOO_LARGE') return new OperationOutcomeError('too-large', tooLarge(err), { cause: err });
  if (!code || /^(08|53|58|57P)/.test(code)) return err;
  const message = code === '25006' ? `${pgMessage(err)} ($dump-sql runs read-only)` : pgMessage(err);
  return new OperationOutcomeError('invalid', `The query failed: ${message}`, { cause: err });
}

/** SPEC §10: a row over FHIRHOSE_SQL_MAX_VALUE_BYTES (storage/pools.ts) ends the query. */
function tooLarge(err: unknown): string {
  const { bytes, limit } = err as { bytes?: number; limit?: number };
  return `A row of the result is ${bytes} bytes, over the limit of ${limit} bytes for one value or row (FHIRHOSE_SQL_MAX_VALUE_BYTES); the query was stopped`;
}
