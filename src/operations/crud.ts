/** REST basics (SPEC §4): create, read, vread, update, delete, history. Search is in search.ts. */
import crypto from 'node:crypto';
import type { OperationContext } from './context.ts';
import { prepareForWrite, present } from './server-types.ts';
import { checkResource, fromRow, toStored, type Resource } from '../fhir/resource.ts';
import { isKnownType } from '../fhir/types.ts';
import { OperationOutcomeError, notFound } from '../fhir/outcome.ts';
import {
  deleteResource, historyOf, insertResource, readResource, readVersion, writeResource,
} from '../storage/resources.ts';

export function assertType(type: string): void {
  if (!isKnownType(type)) throw notFound(`Unknown resource type "${type}"`);
}

/** POST: a new resource; the body's `id` is kept when given, and an id that exists is a 409 (PUT updates). */
export async function createResource(ctx: OperationContext, type: string, body: unknown): Promise<Resource> {
  assertType(type);
  const resource = checkResource(body, type, { type });
  const id = typeof resource.id === 'string' ? resource.id : crypto.randomUUID();
  const prepared = await prepareForWrite(type, toStored(resource), `${type}/${id}`);
  const row = await insertResource(ctx.sql, type, id, prepared);
  if (!row) throw new OperationOutcomeError('conflict', `${type}/${id} already exists; use PUT /${type}/${id} to update it`);
  ctx.changed(type);
  return present(fromRow(row));
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
