/**
 * `$export` kick-off parameters (SPEC §12, Bulk Data IG 3.0 "Query Parameters"): from the query
 * string (GET) or a `Parameters` body (POST), a repeated parameter read as one comma list.
 * What the server cannot honour is refused with 400 naming it; under `Prefer: handling=lenient`
 * it is dropped instead and reported in the manifest's `error` file. Dropping never widens the
 * export: a `_typeFilter` query the server cannot evaluate matches nothing, it is not ignored.
 */
import { invalid, OperationOutcomeError } from '../fhir/outcome.ts';
import { isPlainObject } from '../fhir/resource.ts';
import { RESOURCE_TYPES } from '../fhir/types.ts';
import { COMPARTMENT_TYPES, REFERENCED_TYPES, inCompartment } from '../fhir/compartment.ts';
import { isAlwaysKept, requiredKeys, rootKeys } from '../fhir/elements.ts';
import { normaliseInstant } from './dump.ts';
import { parseLastUpdated } from './search.ts';
import { parseCriterion } from '../fhir/search-criteria.ts';
import { searchParamNames } from '../fhir/search-params.ts';
import type { FilterQuery } from '../storage/export-sql.ts';

export type ExportLevel = 'system' | 'patient' | 'group';

export const OUTPUT_FORMATS = ['application/fhir+ndjson', 'application/ndjson', 'ndjson'];
const KNOWN = new Set(['_outputFormat', '_since', '_until', '_type', '_elements', '_typeFilter', 'patient']);
const SINGLE = new Set(['_outputFormat', '_since', '_until']);

/** What the job needs, stored with it. */
export interface ExportParams {
  level: ExportLevel;
  groupId?: string;
  types: string[];
  since?: string;
  until?: string;
  /** Per subsetted type: the root keys kept. */
  elements?: Record<string, string[]>;
  typeFilters?: Record<string, FilterQuery[]>;
  /** Patient/Group level: every patient, or the listed ones (export_patient rows). */
  patients?: 'all' | 'listed';
  /** The referenced (non-compartment) types shipped with a patient export. */
  refTypes?: string[];
  /** Dropped under handling=lenient: one OperationOutcome each in the `error` file. */
  issues: string[];
  /** `Prefer: respond-async,separate-export-status`: status polls answer 200 + X-Export-Status. */
  separateStatus?: true;
}

export interface KickOffInput {
  level: ExportLevel;
  groupId?: string;
  method: string;
  query: URLSearchParams;
  body?: unknown;
  prefer?: string;
}

/** Raw parameters: name → values (each comma list split), and the `patient` references. */
export interface RawParams {
  values: Map<string, string[]>;
  patients: string[];
  lenient: boolean;
  separateStatus: boolean;
  issues: string[];
}

/** Parameter names and values from the request; unknown names are problems. */
export function rawParams(input: KickOffInput): RawParams {
  const lenient = /(^|[,;\s])handling\s*=\s*lenient\b/i.test(input.prefer ?? '');
  const separateStatus = /(^|[,;\s])separate-export-status\b/i.test(input.prefer ?? '');
  const raw: RawParams = { values: new Map(), patients: [], lenient, separateStatus, issues: [] };
  const add = (name: string, value: string) => {
    if (!KNOWN.has(name)) return problem(raw, `Parameter "${name}" is not supported by $export`);
    if (name === 'patient') return problem(raw, 'Parameter "patient" is accepted in a POST Parameters body only');
    const list = raw.values.get(name) ?? [];
    if (SINGLE.has(name)) list.push(value.trim());
    else list.push(...splitList(name, value));
    raw.values.set(name, list);
  };
  if (input.method === 'POST' && input.body !== undefined && input.body !== null && !(typeof input.body === 'string' && input.body === '')) {
    if (!isPlainObject(input.body) || input.body.resourceType !== 'Parameters') {
      throw invalid('A POST $export body must be a FHIR Parameters resource');
    }
    const parameters = input.body.parameter ?? [];
    if (!Array.isArray(parameters)) throw invalid('Parameters.parameter must be an array');
    parameters.forEach((p, i) => {
      if (!isPlainObject(p) || typeof p.name !== 'string') throw invalid(`Parameters.parameter[${i}] needs a name`);
      if (p.name === 'patient') {
        const ref = isPlainObject(p.valueReference) ? p.valueReference.reference : undefined;
        if (typeof ref !== 'string') return problem(raw, `Parameters.parameter[${i}] (patient) needs valueReference.reference`);
        raw.patients.push(ref.trim());
        return;
      }
      const value = Object.entries(p).find(([k]) => k.startsWith('value'))?.[1];
      if (typeof value !== 'string') return problem(raw, `Parameters.parameter[${i}] (${p.name}) needs a string value (valueString, valueInstant, valueCode …)`);
      add(p.name, value);
    });
  }
  for (const [name, value] of input.query) add(name, value);
  for (const name of SINGLE) {
    const list = raw.values.get(name);
    if (list && new Set(list).size > 1) {
      problem(raw, `Parameter ${name} was given ${list.length} different values (${list.map((v) => JSON.stringify(v)).join(', ')}); it takes one`);
      raw.values.delete(name);
    }
  }
  return raw;
}

/**
 * `_typeFilter` values are `Type?query` strings that may hold commas themselves
 * (`_id=a,b`): a comma starts a new query only when a resource type and `?` follow it.
 */
function splitList(name: string, value: string): string[] {
  const parts = name === '_typeFilter' ? value.split(/,(?=[A-Z][A-Za-z]*\?)/) : value.split(',');
  return parts.map((v) => v.trim()).filter(Boolean);
}

/** A problem: 400 now, or (lenient) a note for the error file. */
export function problem(raw: Pick<RawParams, 'lenient' | 'issues'>, message: string): void {
  if (!raw.lenient) throw invalid(message);
  raw.issues.push(message);
}

export interface Authorizer {
  /** May this client read resources of `type` (GET /<type>)? */
  canRead(type: string): Promise<boolean>;
}

/** Everything but `patient`, which needs the database (operations/export.ts). */
export async function exportParams(input: KickOffInput, raw: RawParams, auth: Authorizer): Promise<ExportParams> {
  const v = (name: string) => raw.values.get(name);
  const format = v('_outputFormat')?.[0];
  if (format !== undefined && !OUTPUT_FORMATS.includes(format)) {
    problem(raw, `_outputFormat ${JSON.stringify(format)} is not supported; use application/fhir+ndjson, application/ndjson or ndjson`);
  }
  const since = instant(raw, '_since', v('_since')?.[0]);
  const until = instant(raw, '_until', v('_until')?.[0]);

  const compartmentLevel = input.level !== 'system';
  const offered = compartmentLevel ? [...COMPARTMENT_TYPES, ...REFERENCED_TYPES] : [...RESOURCE_TYPES];
  let types: string[];
  const asked = v('_type');
  if (asked) {
    types = [];
    for (const type of new Set(asked)) {
      if (!RESOURCE_TYPES.includes(type)) { problem(raw, `_type ${JSON.stringify(type)} is not a FHIR R4 resource type this server exports`); continue; }
      if (!offered.includes(type)) { problem(raw, `_type ${type} is outside the Patient compartment, which a ${input.level}-level export covers`); continue; }
      if (!(await auth.canRead(type))) throw new OperationOutcomeError('forbidden', `_type ${type} is not readable by this client (no AccessPolicy allows GET /${type})`);
      types.push(type);
    }
  } else {
    types = [];
    for (const type of offered) if (await auth.canRead(type)) types.push(type);
  }

  const params: ExportParams = { level: input.level, types, issues: raw.issues };
  if (raw.separateStatus) params.separateStatus = true;
  if (input.groupId !== undefined) params.groupId = input.groupId;
  if (since) params.since = since;
  if (until) params.until = until;
  if (compartmentLevel) {
    params.refTypes = types.filter((t) => REFERENCED_TYPES.includes(t) && !inCompartment(t));
    params.patients = raw.patients.length ? 'listed' : 'all';
  }
  const elements = elementsOf(raw, v('_elements'), types);
  if (elements) params.elements = elements;
  const filters = typeFilters(raw, v('_typeFilter'), types);
  if (filters) params.typeFilters = filters;
  return params;
}

function instant(raw: RawParams, name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    return normaliseInstant(value);
  } catch {
    problem(raw, `${name} must be a FHIR instant like 2024-01-31T12:00:00Z, got ${JSON.stringify(value)}`);
    return undefined;
  }
}

/** `_elements`: `Type.element` or `element`, root elements only; per subsetted type, the keys kept. */
function elementsOf(raw: RawParams, list: string[] | undefined, types: string[]): Record<string, string[]> | undefined {
  if (!list?.length) return undefined;
  const untyped: string[] = [];
  const typed = new Map<string, string[]>();
  for (const item of new Set(list)) {
    const m = /^(?:([A-Z][A-Za-z]*)\.)?([a-z][A-Za-z]*)$/.exec(item);
    if (!m) {
      problem(raw, `_elements ${JSON.stringify(item)} is not a root element (Type.element or element)`);
      continue;
    }
    const [, type, element] = m as unknown as [string, string | undefined, string];
    if (type !== undefined) {
      if (!RESOURCE_TYPES.includes(type)) { problem(raw, `_elements ${item}: ${type} is not a FHIR R4 resource type`); continue; }
      if (!isAlwaysKept(element) && rootKeys(type, element).length === 0) { problem(raw, `_elements ${item}: ${type} has no root element "${element}"`); continue; }
      typed.set(type, [...(typed.get(type) ?? []), element]);
    } else {
      if (!isAlwaysKept(element) && !types.some((t) => rootKeys(t, element).length > 0)) {
        problem(raw, `_elements ${item}: none of the exported types has a root element "${element}"`);
        continue;
      }
      untyped.push(element);
    }
  }
  if (untyped.length === 0 && typed.size === 0) return undefined;
  const out: Record<string, string[]> = {};
  for (const type of types) {
    const named = [...untyped, ...(typed.get(type) ?? [])];
    if (untyped.length === 0 && !typed.has(type)) continue;
    const keys = new Set(requiredKeys(type));
    for (const e of named) if (!isAlwaysKept(e)) for (const k of rootKeys(type, e)) keys.add(k);
    out[type] = [...keys].sort();
  }
  return out;
}

/**
 * `_typeFilter`: `Type?search` queries, OR-ed per type; within one, the parameters are AND-ed:
 * `_id`, `_lastUpdated` and the search parameters of fhir/search-params.ts. A parameter that
 * cannot be evaluated is a problem (400, or under handling=lenient the whole query matches nothing).
 */
function typeFilters(raw: RawParams, list: string[] | undefined, types: string[]): Record<string, FilterQuery[]> | undefined {
  if (!list?.length) return undefined;
  const out: Record<string, FilterQuery[]> = {};
  for (const item of list) {
    const q = item.indexOf('?');
    const type = q < 0 ? item : item.slice(0, q);
    if (!RESOURCE_TYPES.includes(type)) { problem(raw, `_typeFilter ${JSON.stringify(item)}: "${type}" is not a FHIR R4 resource type`); continue; }
    if (!types.includes(type)) { problem(raw, `_typeFilter ${JSON.stringify(item)}: ${type} is not among the exported types`); continue; }
    const filter: FilterQuery = { lastUpdated: [] };
    const search = new URLSearchParams(q < 0 ? '' : item.slice(q + 1));
    for (const [name, value] of search) {
      try {
        if (name === '_id') {
          const ids = value.split(',').map((s) => s.trim()).filter(Boolean);
          filter.ids = filter.ids ? filter.ids.filter((id) => ids.includes(id)) : ids;
        } else if (name === '_lastUpdated') {
          filter.lastUpdated.push(parseLastUpdated(value));
        } else {
          (filter.criteria ??= []).push(parseCriterion(type, name, value));
        }
      } catch (err) {
        const supported = searchParamNames(type);
        const hint = /search parameter "[^"]*" is not supported/.test((err as Error).message)
          ? ` (supported on ${type}: ${['_id', '_lastUpdated', ...supported].join(', ')})` : '';
        problem(raw, `_typeFilter ${JSON.stringify(item)}: ${(err as Error).message}${hint}; this query matches nothing`);
        filter.none = true;
      }
    }
    (out[type] ??= []).push(filter);
  }
  return Object.keys(out).length ? out : undefined;
}
