/**
 * `GET /<Type>?_id=&_lastUpdated=&_count=` (SPEC §4): a searchset Bundle ordered by id, paged by
 * keyset (`_after=<last id>` in the `next` link), so walking the pages sees every row exactly once
 * and a deep page costs what the first one does.
 */
import type { OperationContext } from './context.ts';
import { assertType, type Bundle } from './crud.ts';
import { present } from './server-types.ts';
import { fromRow } from '../fhir/resource.ts';
import { invalid } from '../fhir/outcome.ts';
import { searchResources, type DateBound, type SearchQuery } from '../storage/resources.ts';
import { parseDateTime, startInstant } from '../fhir/datetime.ts';

const SEARCH_PARAMS = new Set(['_id', '_lastUpdated', '_count', '_after', '_format', '_pretty']);
const DEFAULT_COUNT = 100;
const MAX_COUNT = 10_000;

export async function search(ctx: OperationContext, type: string, params: URLSearchParams, selfUrl: string): Promise<Bundle> {
  assertType(type);
  for (const key of params.keys()) {
    if (!SEARCH_PARAMS.has(key)) throw invalid(`Search parameter "${key}" is not supported; use _id, _lastUpdated, _count (paging with _after)`);
  }
  const count = params.has('_count') ? Number(params.get('_count')) : DEFAULT_COUNT;
  if (!Number.isInteger(count) || count < 0 || count > MAX_COUNT) {
    throw invalid(`_count must be an integer from 0 to ${MAX_COUNT}, got "${params.get('_count')}"`);
  }
  const query: SearchQuery = { count, lastUpdated: params.getAll('_lastUpdated').map(parseLastUpdated) };
  const ids = params.get('_id');
  if (ids !== null) query.ids = ids.split(',').filter(Boolean);
  const after = params.get('_after');
  if (after !== null) query.after = after;

  const rows = await searchResources(ctx.sql, type, query);
  const page = rows.slice(0, count);
  const link = [{ relation: 'self', url: selfUrl }];
  if (rows.length > count && page.length > 0) {
    const next = new URL(selfUrl);
    next.searchParams.set('_after', page[page.length - 1]!.id);
    link.push({ relation: 'next', url: next.toString() });
  }
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    link,
    entry: page.map((row) => ({ fullUrl: `${type}/${row.id}`, resource: present(fromRow(row)) })),
  };
}

const PREFIX = /^(eq|gt|ge|lt|le)?(.*)$/s;

/**
 * A FHIR date search value stands for the whole range its precision covers
 * (https://hl7.org/fhir/R4/search.html#date): `eq2024-03` is all of March 2024 (UTC when no zone
 * is given), `gt2024-03` starts in April. Returns the SQL bound for `ts`.
 */
export function parseLastUpdated(raw: string): DateBound {
  const [, op = 'eq', text] = PREFIX.exec(raw)!;
  const value = parseDateTime(text!);
  // PostgreSQL keeps microseconds: a finer fraction would make an empty range.
  if (!value || (value.fraction?.length ?? 0) > 6) {
    throw invalid(`_lastUpdated "${raw}" is not a FHIR date or instant with an optional prefix eq, gt, ge, lt or le`);
  }
  const width = value.fraction !== undefined ? `0.${'0'.repeat(value.fraction.length - 1)}1 seconds`
    : value.second !== undefined ? '1 second'
    : value.minute !== undefined ? '1 minute'
    : value.day !== undefined ? '1 day'
    : value.month !== undefined ? '1 month'
    : '1 year';
  return { op: op as DateBound['op'], start: startInstant(value), width };
}
