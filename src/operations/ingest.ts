/**
 * One ndjson line → one row for the staging table, or the reason it is skipped (SPEC §7).
 * Shared by `$load` and `$import`; no database here, so it is cheap to test and to profile.
 *
 * The per-line work is what Bun adds on top of PostgreSQL's own COPY, so it is kept to one
 * `JSON.parse`, a few property checks and one `JSON.stringify` (SPEC §9: ≥ 0.8× raw COPY); the
 * few lines whose numbers a double would change are parsed keeping them (fhir/json-numbers.ts).
 */
import { isId, isPlainObject, type Json } from '../fhir/resource.ts';
import { isKnownType, SERVER_TYPES } from '../fhir/types.ts';
import { literalReferences, validateStruct } from '../fhir/validate.ts';
import { MAX_JSON_DEPTH, hasNonFinite, textDeeperThan } from '../fhir/json-shape.ts';
import { mayChangeNumbers, parseExact, swapNumbers } from '../fhir/json-numbers.ts';
import type { Line } from '../streams/lines.ts';

export type { Line };

export interface LineOptions {
  /** The type of `/<Type>/$load`: lines may omit `resourceType`; a different one is an error. */
  urlType?: string;
  /** Shallow-merged into every resource (SPEC §7 `merge`). Must not hold `id` or `resourceType`. */
  merge?: Record<string, Json>;
  /** Drop `null` values, and objects/arrays left empty by that (SPEC §7 `strip-nulls`). */
  stripNulls?: boolean;
  /** Validate against the FHIR R4 schema; an invalid resource is a bad line. */
  struct?: boolean;
  /** Collect the literal `Type/id` references into `refs` for the refs check. */
  refs?: boolean;
  /** Only for the message of a too-long line. */
  maxLineBytes?: number;
}

export type ParsedLine =
  | { ok: true; line: number; type: string; id: string; json: string; refs?: string[] }
  | { ok: false; line: number; message: string };

export type GoodLine = Extract<ParsedLine, { ok: true }>;

// Server types are refused: a `Client` loaded by COPY would keep its secret in clear text and
// bypass the auth cache, and `BulkImportStatus` rows belong to the import runner (SPEC §3, §8).
const SERVER = new Set<string>(SERVER_TYPES);

// PostgreSQL's jsonb refuses `\u0000` and unpaired surrogates, which JSON.parse accepts; one such
// line would abort the whole COPY, so it must be caught here. `JSON.stringify` writes an escape
// `\u` only for control characters and unpaired surrogates, so the check is rare and exact.
const PG_UNSAFE_ESCAPE = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

export function parseLine(line: Line, options: LineOptions): ParsedLine {
  const no = line.no;
  if ('tooLong' in line) {
    const limit = options.maxLineBytes ? ` of ${options.maxLineBytes} bytes` : '';
    return bad(no, `line is longer than the limit${limit} (FHIRHOSE_MAX_LINE_BYTES)`);
  }
  if ('notText' in line) return bad(no, 'line is not valid UTF-8 text');
  // Before JSON.parse: the recursive steps below (and PostgreSQL's jsonb parser) must never see it.
  if (textDeeperThan(line.text)) return bad(no, `JSON is nested deeper than ${MAX_JSON_DEPTH} levels`);
  // Numbers are stored as written (`0.0` stays `0.0`, fhir/json-numbers.ts). A line whose numbers
  // a double would change (one in twenty of Synthea's) and that is only stored is parsed with them
  // swapped for integers; when the checks read its values, they read the plain parse, and the
  // stored text comes from a second, exact parse.
  const exact = mayChangeNumbers(line.text);
  const swap = exact && !options.struct && !options.refs && !options.merge ? swapNumbers(line.text) : undefined;
  let value: unknown;
  try {
    value = JSON.parse(swap ? swap.text : line.text);
  } catch (err) {
    return bad(no, `invalid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(value)) return bad(no, 'not a JSON object');
  const resource = value;
  let type = resource.resourceType;
  if (type === undefined && options.urlType !== undefined) type = resource.resourceType = options.urlType;
  if (type === undefined) return bad(no, 'resourceType is missing');
  if (typeof type !== 'string' || !isKnownType(type)) return bad(no, `unknown resourceType ${show(type)}`);
  if (options.urlType !== undefined && type !== options.urlType) {
    return bad(no, `resourceType "${type}" does not match the URL's type "${options.urlType}"`);
  }
  if (SERVER.has(type)) return bad(no, `resourceType "${type}" is a server type and cannot be loaded; use PUT /${type}/<id>`);
  const id = resource.id;
  if (id === undefined) return bad(no, 'id is missing');
  if (!isId(id)) return bad(no, `id ${show(id)} is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)`);

  edit(resource, options);
  if (options.struct) {
    const problem = validateStruct(resource);
    if (problem !== null) return bad(no, problem);
  }
  const refs = options.refs ? literalReferences(resource) : undefined;
  let json = storedJson(resource);
  if (exact) json = swap?.restore(json) ?? storedJson(edit(parseExact(line.text) as Record<string, Json>, options));
  // JSON.parse reads 1e999999 as Infinity and JSON.stringify writes it as null: a silent change.
  if (json.includes('null') && hasNonFinite(resource)) {
    return bad(no, 'holds a number too large to store (over 1.8e308)');
  }
  if (json.includes('\\u') && PG_UNSAFE_ESCAPE.test(json)) {
    return bad(no, 'contains \\u0000 or an unpaired surrogate escape, which PostgreSQL jsonb cannot store');
  }
  const parsed: GoodLine = { ok: true, line: no, type, id, json };
  if (refs) parsed.refs = refs;
  return parsed;
}

/** `merge`, then `strip-nulls`, in place; returns `resource`. */
function edit(resource: Record<string, Json>, options: LineOptions): Record<string, Json> {
  if (options.merge) Object.assign(resource, options.merge);
  if (options.stripNulls) stripNulls(resource);
  return resource;
}

/**
 * The `resource` column's text, by toStored's rules (fhir/resource.ts), without its object copy:
 * JSON.stringify skips `undefined` members, and the rest-spread copy of toStored made parseLine
 * 2.3× slower on Synthea Patients (1012 vs 431 ms for 30k lines, Bun 1.4.5). `resource` is spent.
 */
function storedJson(resource: Record<string, Json | undefined>): string {
  resource.id = undefined;
  resource.resourceType = undefined;
  const meta = resource.meta;
  if (meta === undefined) {
    // nothing to do
  } else if (!isPlainObject(meta)) {
    resource.meta = undefined;
  } else if ('versionId' in meta || 'lastUpdated' in meta) {
    // A copy, not a mutation: `meta` may be the shared object of `options.merge`.
    const { versionId: _v, lastUpdated: _l, ...keep } = meta;
    resource.meta = Object.keys(keep).length > 0 ? keep : undefined;
  } else if (Object.keys(meta).length === 0) {
    resource.meta = undefined;
  }
  return JSON.stringify(resource);
}

/** Removes nulls in place; returns true when the container ended up empty because of it. */
export function stripNulls(node: Json): boolean {
  if (Array.isArray(node)) {
    const before = node.length;
    let kept = 0;
    for (const item of node) {
      if (item === null || (typeof item === 'object' && stripNulls(item))) continue;
      node[kept++] = item;
    }
    node.length = kept;
    return kept === 0 && before > 0;
  }
  if (node === null || typeof node !== 'object') return false;
  let removed = false;
  for (const key in node) {
    const value = node[key]!;
    if (value === null || (typeof value === 'object' && stripNulls(value))) {
      delete node[key];
      removed = true;
    }
  }
  if (!removed) return false;
  for (const _ in node) return false;
  return true;
}

function bad(line: number, message: string): ParsedLine {
  return { ok: false, line, message };
}

function show(value: unknown): string {
  const json = value === undefined ? 'undefined' : JSON.stringify(value);
  return json.length > 80 ? `${json.slice(0, 77)}...` : json;
}
