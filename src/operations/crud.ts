/** REST basics (SPEC §4): create, read, vread, update, delete, history, search. */
import crypto from 'node:crypto';
import type { OperationContext } from './context.ts';
import { prepareForWrite, present } from './server-types.ts';
import { checkResource, fromRow, toStored, type Resource } from '../fhir/resource.ts';
import { isKnownType } from '../fhir/types.ts';
import { invalid, notFound } from '../fhir/outcome.ts';
import {
  deleteResource, historyOf, readResource, readVersion, searchResources, writeResource, type SearchQuery,
} from '../storage/resources.ts';

export function assertType(type: string): void {
  if (!isKnownType(type)) throw notFound(`Unknown resource type "${type}"`);
}

export async function createResource(ctx: OperationContext, type: string, body: unknown): Promise<Resource> {
  assertType(type);
  const resource = checkResource(body, type, { type });
  const id = typeof resource.id === 'string' ? resource.id : crypto.randomUUID();
  return save(ctx, type, id, resource).then((r) => r.resource);
}

export async function updateResource(ctx: OperationContext, type: string, id: string, body: unknown): Promise<{ resource: Resource; created: boolean }> {
  assertType(type);
  const resource = checkResource(body, `${type}/${id}`, { type, id });
  return save(ctx, type, id, resource);
}

async function save(ctx: OperationContext, type: string, id: string, resource: Record<string, unknown>) {
  const prepared = await prepareForWrite(type, toStored(resource), `${type}/${id}`);
  const { row, created } = await ctx.sql.begin((tx) => writeResource(tx, type, id, prepared));
  ctx.changed(type);
  return { resource: present(fromRow(row)), created };
}

export async function readOne(ctx: OperationContext, type: string, id: string): Promise<Resource> {
  assertType(type);
  const row = await readResource(ctx.sql, type, id);
  if (!row) throw notFound(`${type}/${id} not found`);
  return present(fromRow(row));
}

export async function readOneVersion(ctx: OperationContext, type: string, id: string, versionId: string): Promise<Resource> {
  assertType(type);
  if (!/^\d{1,18}$/.test(versionId)) throw notFound(`${type}/${id}/_history/${versionId} not found`);
  const row = await readVersion(ctx.sql, type, id, versionId);
  if (!row) throw notFound(`${type}/${id}/_history/${versionId} not found`);
  return present(fromRow(row));
}

export async function removeResource(ctx: OperationContext, type: string, id: string): Promise<void> {
  assertType(type);
  if (type === 'BulkImportStatus') await prepareForWrite(type, {}, `${type}/${id}`);
  const deleted = await ctx.sql.begin((tx) => deleteResource(tx, type, id));
  if (!deleted) throw notFound(`${type}/${id} not found`);
  ctx.changed(type);
}

export interface Bundle {
  resourceType: 'Bundle';
  type: 'history' | 'searchset';
  total?: number;
  link?: { relation: string; url: string }[];
  entry: { fullUrl?: string; resource: Resource; request?: { method: string; url: string } }[];
}

export async function history(ctx: OperationContext, type: string, id: string): Promise<Bundle> {
  assertType(type);
  const rows = await historyOf(ctx.sql, type, id);
  if (rows.length === 0) throw notFound(`${type}/${id} not found`);
  return {
    resourceType: 'Bundle',
    type: 'history',
    total: rows.length,
    entry: rows.map((row) => ({
      resource: present(fromRow(row)),
      request: { method: row.status === 'deleted' ? 'DELETE' : row.status === 'updated' ? 'PUT' : 'POST', url: `${type}/${id}` },
    })),
  };
}

const SEARCH_PARAMS = new Set(['_id', '_lastUpdated', '_count', '_after', '_format', '_pretty']);

/** `GET /<Type>?_id=&_lastUpdated=&_count=` with keyset paging on id (`_after`). */
export async function search(ctx: OperationContext, type: string, params: URLSearchParams, selfUrl: string): Promise<Bundle> {
  assertType(type);
  for (const key of params.keys()) {
    if (!SEARCH_PARAMS.has(key)) throw invalid(`Search parameter "${key}" is not supported; use _id, _lastUpdated, _count (paging with _after)`);
  }
  const count = params.has('_count') ? Number(params.get('_count')) : 100;
  if (!Number.isInteger(count) || count < 0 || count > 10_000) throw invalid(`_count must be an integer from 0 to 10000, got "${params.get('_count')}"`);
  const query: SearchQuery = { count, lastUpdated: [] };
  const ids = params.get('_id');
  if (ids !== null) query.ids = ids.split(',').filter(Boolean);
  for (const v of params.getAll('_lastUpdated')) {
    const m = /^(eq|gt|ge|lt|le)?(\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?)$/.exec(v);
    if (!m || Number.isNaN(Date.parse(m[2]!.length === 4 ? `${m[2]}-01-01` : m[2]!.length === 7 ? `${m[2]}-01` : m[2]!))) {
      throw invalid(`_lastUpdated "${v}" is not a FHIR date/instant with an optional prefix eq|gt|ge|lt|le`);
    }
    query.lastUpdated.push({ op: (m[1] ?? 'eq') as SearchQuery['lastUpdated'][number]['op'], value: m[2]!.length === 4 ? `${m[2]}-01-01` : m[2]!.length === 7 ? `${m[2]}-01` : m[2]! });
  }
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
  return { resourceType: 'Bundle', type: 'searchset', link, entry: page.map((row) => ({ fullUrl: `${type}/${row.id}`, resource: present(fromRow(row)) })) };
}
