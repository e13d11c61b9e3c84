/**
 * Search criteria (fhir/search-criteria.ts) as SQL conditions over a resource row's jsonb, with
 * every value inlined as a literal: `$export` parts run inside COPY, which takes no parameters.
 * Paths are walked with lax jsonpath (arrays are visited item by item) in silent mode, so a value
 * of an unexpected shape or a date that does not exist (2023-02-30) matches nothing instead of
 * failing the statement.
 *
 * Dates: a resource's date, dateTime or instant is read as the instant it starts at (UTC when it
 * has no zone); a Period as [start, end], an open end unbounded. A search value covers [S, E)
 * (its precision): eq S ≤ t < E, gt t ≥ E, ge t ≥ S, lt t < S, le t < E; for a Period, eq wants
 * it inside [S, E), gt/ge look at its end, lt/le at its start.
 */
import type { Criterion, DateRange, TokenValue } from '../fhir/search-criteria.ts';

/** A SQL string literal; standard_conforming_strings is on (PostgreSQL's default since 9.1). */
export function literal(value: string): string {
  if (value.includes('\0')) throw new Error('a NUL character cannot be inlined in SQL');
  return `'${value.replaceAll("'", "''")}'`;
}

/** `a.b` → `$."a"."b"` (quoted: `class`, `last` … are jsonpath words). */
function jsonPath(path: string): string {
  return '$' + path.split('.').map((k) => `."${k}"`).join('');
}

function exists(alias: string, path: string, vars: Record<string, unknown>): string {
  return `jsonb_path_exists(${alias}.resource, ${literal(`lax ${path}`)}, ${literal(JSON.stringify(vars))}::jsonb, true)`;
}

/** Each value of the path: `select x from …` (x is jsonb). */
function items(alias: string, path: string): string {
  return `jsonb_path_query(${alias}.resource, ${literal(`lax ${jsonPath(path)}`)}, '{}'::jsonb, true) as v(x)`;
}

export function criterionSql(c: Criterion, alias: string): string {
  const or: string[] = [];
  switch (c.type) {
    case 'token':
      for (const { path, shape } of c.paths) for (const value of c.values) or.push(tokenSql(alias, path, shape, value));
      break;
    case 'date':
      for (const { path, shape } of c.paths) {
        const conds = c.values.map((b) => (shape === 'point' ? pointCond(instant('v.x'), b) : periodCond(b)));
        or.push(`exists (select 1 from ${items(alias, path)} where ${conds.map((x) => `(${x})`).join(' or ')})`);
      }
      break;
    case 'reference':
      for (const path of c.paths) {
        const text = `(v.x #>> '{}')`;
        const conds = c.values.map((r) => (r.type !== undefined
          ? `${text} = ${literal(`${r.type}/${r.id}`)} or ${text} like ${literal(`%/${r.type}/${r.id}`)}`
          : `${text} ~ ${literal(`^([^?#]*/)?[A-Z][A-Za-z]+/${r.id.replaceAll('.', '\\.')}$`)}`));
        or.push(`exists (select 1 from ${items(alias, `${path}.reference`)} where jsonb_typeof(v.x) = 'string' and (${conds.join(' or ')}))`);
      }
      break;
    case 'string':
      for (const path of c.paths) {
        const text = `(v.x #>> '{}')`;
        const conds = c.values.map((s) => (c.match === 'exact' ? `${text} = ${literal(s)}`
          : c.match === 'contains' ? `strpos(lower(${text}), lower(${literal(s)})) > 0`
          : `starts_with(lower(${text}), lower(${literal(s)}))`));
        or.push(`exists (select 1 from ${items(alias, path)} where jsonb_typeof(v.x) = 'string' and (${conds.join(' or ')}))`);
      }
      break;
  }
  return or.length ? `(${or.join(' or ')})` : 'false';
}

function tokenSql(alias: string, path: string, shape: string, value: TokenValue): string {
  const p = jsonPath(path);
  if (shape === 'boolean') return exists(alias, `${p} ? (@ == $b)`, { b: value.code === 'true' });
  // a code primitive has no system of its own: `system|code` and `|code` match its code
  if (shape === 'code') return value.code === undefined ? 'false' : exists(alias, `${p} ? (@ == $code)`, { code: value.code });
  const base = shape === 'concept' ? `${p}."coding"` : p;
  const codeKey = shape === 'identifier' ? '"value"' : '"code"';
  const conds: string[] = [];
  const vars: Record<string, unknown> = {};
  if (value.code !== undefined) { conds.push(`@.${codeKey} == $code`); vars.code = value.code; }
  if (value.system === null) conds.push('!exists(@."system")');
  else if (value.system !== undefined) { conds.push('@."system" == $system'); vars.system = value.system; }
  return exists(alias, conds.length ? `${base} ? (${conds.join(' && ')})` : base, vars);
}

/**
 * The instant a FHIR date/dateTime/instant text starts at, or null: the text is completed to an
 * ISO timestamp with a zone and parsed by jsonpath's datetime() in silent mode (no error for a
 * day that does not exist); fractions past microseconds are cut.
 */
function instant(jsonExpr: string): string {
  const t = `(${jsonExpr} #>> '{}')`;
  const full = `case when ${t} ~ '^\\d{4}$' then ${t} || '-01-01T00:00:00+00:00'
      when ${t} ~ '^\\d{4}-\\d{2}$' then ${t} || '-01T00:00:00+00:00'
      when ${t} ~ '^\\d{4}-\\d{2}-\\d{2}$' then ${t} || 'T00:00:00+00:00'
      when ${t} ~ '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2}(\\.\\d+)?)?(Z|[+-]\\d{2}:\\d{2})$' then regexp_replace(regexp_replace(${t}, '(\\.\\d{6})\\d+', '\\1'), 'Z$', '+00:00')
      when ${t} ~ '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2}(\\.\\d+)?)?$' then regexp_replace(${t}, '(\\.\\d{6})\\d+', '\\1') || '+00:00'
    end`;
  return `(jsonb_path_query_first(to_jsonb(${full}), '$.datetime()', '{}'::jsonb, true) #>> '{}')::timestamptz`;
}

function bounds(b: DateRange): { S: string; E: string } {
  const S = `${literal(b.start)}::timestamptz`;
  return { S, E: `(${S} + ${literal(b.width)}::interval)` };
}

function pointCond(t: string, b: DateRange): string {
  const { S, E } = bounds(b);
  switch (b.op) {
    case 'eq': return `${t} >= ${S} and ${t} < ${E}`;
    case 'gt': return `${t} >= ${E}`;
    case 'ge': return `${t} >= ${S}`;
    case 'lt': return `${t} < ${S}`;
    case 'le': return `${t} < ${E}`;
  }
}

function periodCond(b: DateRange): string {
  const { S, E } = bounds(b);
  const start = `coalesce(${instant(`(v.x -> 'start')`)}, '-infinity'::timestamptz)`;
  const end = `coalesce(${instant(`(v.x -> 'end')`)}, 'infinity'::timestamptz)`;
  const period = `jsonb_typeof(v.x) = 'object' and (v.x ? 'start' or v.x ? 'end') and `;
  switch (b.op) {
    case 'eq': return `${period}${start} >= ${S} and ${end} < ${E}`;
    case 'gt': return `${period}${end} >= ${E}`;
    case 'ge': return `${period}${end} >= ${S}`;
    case 'lt': return `${period}${start} < ${S}`;
    case 'le': return `${period}${start} < ${E}`;
  }
}
