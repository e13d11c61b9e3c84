/**
 * The two shapes of a resource (SPEC §2): what the API speaks (complete FHIR JSON) and what the
 * `resource` column stores (everything but `id`, `resourceType`, `meta.versionId`,
 * `meta.lastUpdated`, which live in columns).
 */
import { invalid } from './outcome.ts';
import { isKeptNumber } from './json-numbers.ts';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Resource = { resourceType: string; id: string; meta?: Record<string, Json> } & Record<string, Json | undefined>;

/** FHIR `id`: 1–64 of [A-Za-z0-9.-] (http://hl7.org/fhir/R4/datatypes.html#id). */
export const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

export function isId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

export function isPlainObject(value: unknown): value is Record<string, Json> {
  // a number kept as written (fhir/json-numbers.ts) is an object to JavaScript, a number to JSON
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !isKeptNumber(value);
}

/** The `resource` column's content: columns removed, an emptied `meta` dropped. */
export function toStored(resource: Record<string, unknown>): Record<string, Json> {
  const { id: _id, resourceType: _type, meta, ...rest } = resource;
  if (isPlainObject(meta)) {
    const { versionId: _v, lastUpdated: _l, ...keep } = meta;
    if (Object.keys(keep).length > 0) return { meta: keep, ...rest } as Record<string, Json>;
  }
  return rest as Record<string, Json>;
}

export interface ResourceRow {
  id: string;
  txid: string | number | bigint;
  /** ISO instant with microseconds, UTC (see storage LAST_UPDATED). */
  last_updated: string;
  resource_type: string;
  status?: string;
  resource: Record<string, Json>;
}

/** Complete FHIR JSON from a row; works for rows inserted by hand with SQL (SPEC §2). */
export function fromRow(row: ResourceRow): Resource {
  // a hand-inserted `resource` that is not an object (a JSON string, an array) reads as {} as in $dump
  const { id: _id, resourceType: _type, meta, ...rest } = isPlainObject(row.resource) ? row.resource : {};
  return {
    resourceType: row.resource_type,
    id: row.id,
    meta: { ...(isPlainObject(meta) ? meta : {}), versionId: String(row.txid), lastUpdated: row.last_updated },
    ...rest,
  };
}

/** Basic shape check for a resource arriving through the API; `where` prefixes the message. */
export function checkResource(value: unknown, where: string, expect: { type?: string; id?: string } = {}): Record<string, Json> {
  if (!isPlainObject(value)) throw invalid(`${where}: a resource must be a JSON object`);
  const type = value.resourceType;
  if (expect.type !== undefined && type !== undefined && type !== expect.type) {
    throw invalid(`${where}: resourceType "${String(type)}" does not match the URL's type "${expect.type}"`);
  }
  if (expect.id !== undefined && value.id !== undefined && value.id !== expect.id) {
    throw invalid(`${where}: id "${String(value.id)}" does not match the URL's id "${expect.id}"`);
  }
  if (value.id !== undefined && !isId(value.id)) {
    throw invalid(`${where}: id ${JSON.stringify(value.id)} is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)`);
  }
  // PostgreSQL jsonb cannot hold U+0000: refuse it here, with the item named, not as a 500 mid-transaction
  if (hasNul(value)) throw invalid(`${where}: text contains a NUL character (\\u0000), which cannot be stored`);
  return value;
}

function hasNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\0');
  if (Array.isArray(value)) return value.some(hasNul);
  if (isPlainObject(value)) return Object.entries(value).some(([k, v]) => k.includes('\0') || hasNul(v));
  return false;
}
