/**
 * The SQL of one `$export` part (SPEC §12): which rows of a type, and what of each row.
 * COPY runs over the simple protocol (no parameters), so every value is inlined through
 * `literal()`; identifiers are quoted with `ident()`.
 *
 * - `_since`/`_until` compare `ts` (= meta.lastUpdated): changed after / before.
 * - `_typeFilter` queries are OR-ed; one query's parameters are AND-ed (`_id`, `_lastUpdated`, and
 *   the search parameters of fhir/search-params.ts, as storage/search-sql.ts writes them).
 * - Patient compartment: some reference at one of the type's compartment paths
 *   (fhir/compartment.ts) is `Patient/<id>` of a patient of the export: every patient (Patient
 *   level) or the job's `export_patient` rows (a Group's members, the `patient` parameter).
 * - Referenced resources (Practitioner, Organization …): the ids collected in `export_ref`, inlined
 *   (export_ref is written after the snapshot was taken, so the snapshot cannot read it).
 */
import { ident } from './db.ts';
import { tableOf, historyTableOf } from '../fhir/types.ts';
import type { DateBound } from './resources.ts';
import type { Criterion } from '../fhir/search-criteria.ts';
import { criterionSql, literal } from './search-sql.ts';

export { literal };

export interface FilterQuery {
  ids?: string[];
  lastUpdated: DateBound[];
  /** The other search parameters, each AND-ed. */
  criteria?: Criterion[];
  /** A query the server cannot honour, kept under `handling=lenient`: it matches nothing. */
  none?: boolean;
}

export interface Compartment {
  /** JSON paths (lax) of the references that put a resource of this type in a patient's compartment. */
  paths: string[];
  /** The Patient type itself: its own id is a member too. */
  self: boolean;
  /** `all`: every patient in the table; `listed`: the job's export_patient rows. */
  patients: 'all' | 'listed';
}

export interface PartQuery {
  jobId: string;
  type: string;
  since?: string;
  until?: string;
  filters?: FilterQuery[];
  compartment?: Compartment;
  /** Only these ids (the referenced resources collected in export_ref). */
  ids?: string[];
  /** Root elements to keep (plus the mandatory ones); the resource is tagged SUBSETTED. */
  elements?: string[];
}

const SUBSETTED = `'[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}]'::jsonb`;

/** `select id, txid, ts, resource` of a part: the tuple layout the $dump line writer reads. */
export function partSelect(q: PartQuery, extra?: string): string {
  const where = partWhere(q, 'r');
  if (extra) where.push(extra);
  return `select r.id, r.txid, r.ts, ${resourceExpression(q.elements)} from ${ident(tableOf(q.type))} r${where.length ? ` where ${where.join(' and ')}` : ''}`;
}

/**
 * Deleted since `since`: the last deletion marker of each id that is gone now (a resource deleted
 * and created again is in the output instead), with the same filters applied to its last content.
 */
export function deletedSelect(q: PartQuery): string {
  const where = partWhere({ ...q, elements: undefined }, 'h');
  return `select distinct on (h.id) h.id, h.txid, h.ts from ${ident(historyTableOf(q.type))} h
    where h.status = 'deleted' and not exists (select 1 from ${ident(tableOf(q.type))} t where t.id = h.id)
    ${where.length ? `and ${where.join(' and ')}` : ''} order by h.id, h.txid desc`;
}

/**
 * The distinct `Type/id` references of the given types that the parts' rows hold anywhere
 * (`strict $.**.reference`): the Practitioners, Organizations … the export ships too.
 */
export function refsSelect(parts: PartQuery[], refTypes: string[]): string {
  const selects = parts.map((q) => {
    const where = partWhere({ ...q, elements: undefined }, 'r');
    return `select jsonb_path_query(r.resource, 'strict $.**.reference') #>> '{}' as ref from ${ident(tableOf(q.type))} r${where.length ? ` where ${where.join(' and ')}` : ''}`;
  });
  const pattern = `^(${refTypes.join('|')})/[A-Za-z0-9.-]{1,64}$`;
  return `select distinct split_part(x.ref, '/', 1) as type, split_part(x.ref, '/', 2) as id
    from (${selects.join(' union all ')}) x where x.ref ~ ${literal(pattern)}`;
}

function partWhere(q: PartQuery, alias: string): string[] {
  const where: string[] = [];
  if (q.since !== undefined) where.push(`${alias}.ts > ${literal(q.since)}::timestamptz`);
  if (q.until !== undefined) where.push(`${alias}.ts < ${literal(q.until)}::timestamptz`);
  if (q.filters?.length) where.push(`(${q.filters.map((f) => filterCondition(f, alias)).join(' or ')})`);
  if (q.compartment) where.push(compartmentCondition(q.jobId, q.compartment, alias));
  if (q.ids) where.push(q.ids.length ? `${alias}.id = any(array[${q.ids.map(literal).join(', ')}]::text[])` : 'false');
  return where;
}

function filterCondition(f: FilterQuery, alias: string): string {
  if (f.none) return 'false';
  const and: string[] = [];
  if (f.ids) and.push(`${alias}.id = any(array[${f.ids.map(literal).join(', ')}]::text[])`);
  for (const b of f.lastUpdated) {
    const start = `${literal(b.start)}::timestamptz`;
    const end = `(${start} + ${literal(b.width)}::interval)`;
    if (b.op === 'eq') and.push(`(${alias}.ts >= ${start} and ${alias}.ts < ${end})`);
    else if (b.op === 'gt') and.push(`${alias}.ts >= ${end}`);
    else if (b.op === 'ge') and.push(`${alias}.ts >= ${start}`);
    else if (b.op === 'lt') and.push(`${alias}.ts < ${start}`);
    else and.push(`${alias}.ts < ${end}`);
  }
  for (const c of f.criteria ?? []) and.push(criterionSql(c, alias));
  return and.length ? `(${and.join(' and ')})` : 'true';
}

function compartmentCondition(jobId: string, c: Compartment, alias: string): string {
  const isPatient = (idExpr: string) => c.patients === 'all'
    ? `exists (select 1 from patient p where p.id = ${idExpr})`
    : `exists (select 1 from export_patient p where p.job_id = ${literal(jobId)} and p.patient_id = ${idExpr})`;
  const or: string[] = [];
  if (c.self) or.push(isPatient(`${alias}.id`));
  if (c.paths.length) {
    const paths = c.paths.map((p) => literal(`lax ${p}`)).join(', ');
    or.push(`exists (select 1 from unnest(array[${paths}]::jsonpath[]) as cp(path), jsonb_path_query(${alias}.resource, cp.path) as v(ref)
      where jsonb_typeof(v.ref) = 'string' and v.ref #>> '{}' like 'Patient/%' and ${isPatient(`substr(v.ref #>> '{}', 9)`)})`);
  }
  return or.length ? `(${or.join(' or ')})` : 'false';
}

/** The resource column, or only its listed root elements (and meta, tagged SUBSETTED). */
function resourceExpression(elements: string[] | undefined): string {
  if (!elements) return 'r.resource';
  const keep = elements.length ? `array[${elements.map(literal).join(', ')}]::text[]` : `'{}'::text[]`;
  const meta = `case when jsonb_typeof(r.resource->'meta') = 'object' then r.resource->'meta' else '{}'::jsonb end`;
  const tags = `case when jsonb_typeof(r.resource->'meta'->'tag') = 'array' then r.resource->'meta'->'tag' else '[]'::jsonb end`;
  return `(select coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb) from jsonb_each(case when jsonb_typeof(r.resource) = 'object' then r.resource else '{}'::jsonb end) e
      where e.key = any(${keep}) and e.key <> 'meta')
    || jsonb_build_object('meta', ${meta} || jsonb_build_object('tag', ${tags} || ${SUBSETTED}))`;
}
