/**
 * `GET /<Type>?_id=&_lastUpdated=&_count=` (SPEC §4): a searchset Bundle ordered by id, paged by
 * keyset (`_after=<last id>` in the `next` link), so walking the pages sees every row exactly once
 * and a deep page costs what the first one does. The other search parameters of
 * fhir/search-params.ts (`Observation?code=…`, `Patient?gender=…`) are the ones `$export`'s
 * `_typeFilter` evaluates, with the same reading (fhir/search-criteria.ts) and SQL.
 */
import type { OperationContext } from './context.ts';
import { assertType, type Bundle } from './crud.ts';
import { present } from './server-types.ts';
import { fromRow } from '../fhir/resource.ts';
import { invalid } from '../fhir/outcome.ts';
import { searchResources, type DateBound, type SearchQuery } from '../storage/resources.ts';
import { parseCriterion, parseDateRange, type Criterion } from '../fhir/search-criteria.ts';
import { searchParamNames } from '../fhir/search-params.ts';

const CONTROL_PARAMS = new Set(['_id', '_lastUpdated', '_count', '_after', '_format', '_pretty']);
const DEFAULT_COUNT = 100;
const MAX_COUNT = 10_000;

export async function search(ctx: OperationContext, type: string, params: URLSearchParams, selfUrl: string): Promise<Bundle> {
  assertType(type);
  const criteria: Criterion[] = [];
  for (const [key, value] of params) {
    if (CONTROL_PARAMS.has(key)) continue;
    if (key.startsWith('_')) throw invalid(`Search parameter "${key}" is not supported; use _id, _lastUpdated, _count (paging with _after) or ${supported(type)}`);
    try {
      criteria.push(parseCriterion(type, key, value));
    } catch (err) {
      const message = (err as Error).message;
      throw invalid(`${message[0]!.toUpperCase()}${message.slice(1)}; supported on ${type}: _id, _lastUpdated, _count (paging with _after)${searchParamNames(type).length ? `, ${supported(type)}` : ''}`);
    }
  }
  const count = params.has('_count') ? Number(params.get('_count')) : DEFAULT_COUNT;
  if (!Number.isInteger(count) || count < 0 || count > MAX_COUNT) {
    throw invalid(`_count must be an integer from 0 to ${MAX_COUNT}, got "${params.get('_count')}"`);
  }
  const query: SearchQuery = { count, lastUpdated: params.getAll('_lastUpdated').map(parseLastUpdated), criteria };
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

function supported(type: string): string {
  const names = searchParamNames(type);
  return names.length ? names.join(', ') : `no other parameter on ${type}`;
}

/** A `_lastUpdated` value (fhir/search-criteria.ts parseDateRange), or 400 saying what is wrong. */
export function parseLastUpdated(raw: string): DateBound {
  try {
    return parseDateRange('_lastUpdated', raw);
  } catch (err) {
    throw invalid((err as Error).message);
  }
}
