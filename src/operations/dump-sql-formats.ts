/**
 * The four output formats of `POST /$dump-sql` (SPEC §6), written from PostgreSQL's text output of
 * each value, so what goes out is exactly what the database holds.
 * - csv: the Aidbox example's tab-separated rows by default; RFC 4180 quoting (a field with the
 *   delimiter, a quote, CR or LF is quoted, quotes doubled); NULL is an empty field, the empty
 *   string is `""` (as PostgreSQL's own CSV writes it, so the two stay apart). Lines end in LF.
 * - ndjson: one object per row; numbers, booleans and json/jsonb values keep their JSON type,
 *   everything else is a string (PostgreSQL's text for it).
 * - sql: `INSERT INTO <table> (<columns>) VALUES (…);` literals that psql replays into the same values.
 * - elastic-bulk: an `index` action line (`_id` from a column named `id`) and the row as ndjson.
 */
import type { CursorColumn, RawRow } from '../storage/sql-cursor.ts';
import { ident } from '../storage/db.ts';

export const FORMATS = ['csv', 'ndjson', 'sql', 'elastic-bulk'] as const;
export type DumpSqlFormat = (typeof FORMATS)[number];

export interface FormatOptions {
  format: DumpSqlFormat;
  header: boolean;
  delimiter: string;
  table?: string;
  index?: string;
}

export interface RowFormatter {
  contentType: string;
  /** What comes before the first row (the CSV header line, or nothing). */
  head: string;
  rows(rows: RawRow[]): string;
}

/** PostgreSQL type OIDs (pg_type.dat) whose text output is already a JSON value. */
const BOOL = 16;
const NUMERIC_TYPES = new Set([20, 21, 23, 26, 700, 701, 1700]); // int8 int2 int4 oid float4 float8 numeric
const JSON_TYPES = new Set([114, 3802]); // json jsonb
const JSON_TYPE = 114;
const JSON_NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

export function rowFormatter(columns: CursorColumn[], options: FormatOptions): RowFormatter {
  switch (options.format) {
    case 'csv': return csv(columns, options);
    case 'ndjson': {
      const object = jsonObject(columns);
      return { contentType: 'application/ndjson', head: '', rows: (rows) => rows.map((r) => object(r) + '\n').join('') };
    }
    case 'sql': return sql(columns, options.table!);
    case 'elastic-bulk': return elasticBulk(columns, options.index);
  }
}

function csv(columns: CursorColumn[], options: FormatOptions): RowFormatter {
  const d = options.delimiter;
  const special = new RegExp(`[${d.replace(/[\\\]^-]/g, '\\$&')}"\\r\\n]`);
  const field = (v: string | null) => v === null ? '' : v === '' ? '""' : special.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
  return {
    contentType: d === '\t' ? 'text/tab-separated-values' : 'text/csv',
    head: options.header ? columns.map((c) => field(c.name)).join(d) + '\n' : '',
    rows: (rows) => rows.map((r) => r.map((v) => field(v === null ? null : v.toString('utf8'))).join(d) + '\n').join(''),
  };
}

/** Column names as JSON keys; a repeated name (`select 1, 2` gives two "?column?") gets _2, _3 … */
function uniqueNames(columns: CursorColumn[]): string[] {
  const seen = new Map<string, number>();
  return columns.map(({ name }) => {
    const n = (seen.get(name) ?? 0) + 1;
    seen.set(name, n);
    return n === 1 ? name : `${name}_${n}`;
  });
}

function jsonObject(columns: CursorColumn[]): (row: RawRow) => string {
  const keys = uniqueNames(columns).map((n) => JSON.stringify(n) + ':');
  const types = columns.map((c) => c.type);
  return (row) => {
    let out = '{';
    for (let i = 0; i < row.length; i++) out += (i ? ',' : '') + keys[i] + jsonValue(row[i]!, types[i]!);
    return out + '}';
  };
}

function jsonValue(value: Buffer | null, type: number): string {
  if (value === null) return 'null';
  const text = value.toString('utf8');
  if (type === BOOL) return text === 't' ? 'true' : 'false';
  // json (not jsonb) keeps its input's whitespace, line breaks included; outside strings they are
  // only whitespace (inside one they are escaped, or it would not be json), so a space keeps the record on one line
  if (type === JSON_TYPE) return text.includes('\n') || text.includes('\r') ? text.replace(/[\r\n]/g, ' ') : text;
  if (JSON_TYPES.has(type)) return text;
  if (NUMERIC_TYPES.has(type) && JSON_NUMBER.test(text)) return text; // NaN, Infinity stay strings
  return JSON.stringify(text);
}

function sql(columns: CursorColumn[], table: string): RowFormatter {
  const target = table.split('.').length === 2 && !table.includes('"') ? table.split('.').map(ident).join('.') : ident(table);
  const prefix = `INSERT INTO ${target} (${uniqueNames(columns).map(ident).join(', ')}) VALUES (`;
  const types = columns.map((c) => c.type);
  return {
    contentType: 'application/sql',
    head: '',
    rows: (rows) => rows.map((r) => prefix + r.map((v, i) => sqlLiteral(v, types[i]!)).join(', ') + ');\n').join(''),
  };
}

/** A literal PostgreSQL casts back to the column's value; E'' when backslashes must survive. */
function sqlLiteral(value: Buffer | null, type: number): string {
  if (value === null) return 'NULL';
  const text = value.toString('utf8');
  if (type === BOOL) return text === 't' ? 'true' : 'false';
  if (NUMERIC_TYPES.has(type) && JSON_NUMBER.test(text)) return text;
  const quoted = text.replaceAll("'", "''");
  // E'' with \n and \r escapes when the value holds a line break: one INSERT per line (SPEC §10)
  if (!/[\\\r\n]/.test(text)) return `'${quoted}'`;
  return `E'${quoted.replaceAll('\\', '\\\\').replaceAll('\n', '\\n').replaceAll('\r', '\\r')}'`;
}

function elasticBulk(columns: CursorColumn[], index: string | undefined): RowFormatter {
  const object = jsonObject(columns);
  const idColumn = columns.findIndex((c) => c.name === 'id');
  const target = index === undefined ? '' : `"_index":${JSON.stringify(index)}`;
  const action = (row: RawRow) => {
    const id = idColumn >= 0 ? row[idColumn] : null;
    const idField = id === null || id === undefined ? '' : `${target ? ',' : ''}"_id":${JSON.stringify(id.toString('utf8'))}`;
    return `{"index":{${target}${idField}}}\n`;
  };
  return { contentType: 'application/x-ndjson', head: '', rows: (rows) => rows.map((r) => action(r) + object(r) + '\n').join('') };
}
