/**
 * One FHIR search parameter (`name[:modifier]=value`) read into a criterion the storage layer can
 * evaluate (storage/search-sql.ts), or an Error naming what is not supported and why. Semantics
 * (https://hl7.org/fhir/R4/search.html): comma-separated values are OR-ed, repeated parameters
 * AND-ed (the caller keeps one criterion per parameter);
 * - token: `code`, `system|code`, `|code` (no system), `system|` (any code of the system);
 * - date: a prefix `eq` (default), `gt`, `ge`, `lt`, `le` and a date/dateTime/instant at any
 *   precision, standing for the range its precision covers;
 * - reference: `Type/id`, `id` (any type, or the `:Type` modifier's), or an absolute URL ending
 *   in `Type/id`;
 * - string: starts with the value, case-insensitive; `:exact` and `:contains` as in R4.
 */
import { parseDateTime, startInstant } from './datetime.ts';
import { searchParam, type SearchParamDef } from './search-params.ts';
import { RESOURCE_TYPES } from './types.ts';

/** A date value: the range [start, start + width) its precision covers, and the comparison. */
export interface DateRange {
  op: 'eq' | 'gt' | 'ge' | 'lt' | 'le';
  start: string;
  width: string;
}

/** `system` undefined: any system; null: no system (`|code`). `code` undefined: any code (`system|`). */
export interface TokenValue {
  system?: string | null;
  code?: string;
}

export type Criterion =
  | { type: 'token'; paths: Extract<SearchParamDef, { type: 'token' }>['paths']; values: TokenValue[] }
  | { type: 'date'; paths: Extract<SearchParamDef, { type: 'date' }>['paths']; values: DateRange[] }
  | { type: 'reference'; paths: string[]; values: { type?: string; id: string }[] }
  | { type: 'string'; paths: string[]; match: 'start' | 'exact' | 'contains'; values: string[] };

const PREFIX = /^(eq|gt|ge|lt|le|ne|sa|eb|ap)?(.*)$/s;
const ID = /^[A-Za-z0-9.-]{1,64}$/;

/**
 * A FHIR date search value (https://hl7.org/fhir/R4/search.html#date): `eq2024-03` is all of
 * March 2024 (UTC when no zone is given), `gt2024-03` starts in April. `name` is for the message.
 */
export function parseDateRange(name: string, raw: string): DateRange {
  const [, op = 'eq', text] = PREFIX.exec(raw)!;
  if (['ne', 'sa', 'eb', 'ap'].includes(op)) throw new Error(`${name} "${raw}": the prefix ${op} is not supported (eq, gt, ge, lt, le are)`);
  const value = parseDateTime(text!);
  // PostgreSQL keeps microseconds: a finer fraction would make an empty range.
  if (!value || (value.fraction?.length ?? 0) > 6) {
    throw new Error(`${name} "${raw}" is not a FHIR date or instant with an optional prefix eq, gt, ge, lt or le`);
  }
  const width = value.fraction !== undefined ? `0.${'0'.repeat(value.fraction.length - 1)}1 seconds`
    : value.second !== undefined ? '1 second'
    : value.minute !== undefined ? '1 minute'
    : value.day !== undefined ? '1 day'
    : value.month !== undefined ? '1 month'
    : '1 year';
  return { op: op as DateRange['op'], start: startInstant(value), width };
}

/** Comma-separated values; `\,` is a literal comma (R4 search "Escaping search parameters"). */
function values(raw: string): string[] {
  return raw.split(/(?<!\\),/).map((v) => v.replaceAll('\\,', ',')).filter((v) => v !== '');
}

/** The criterion of `key=raw` on `type`; throws an Error saying what is not supported. */
export function parseCriterion(type: string, key: string, raw: string): Criterion {
  const [name = '', modifier, ...extra] = key.split(':');
  if (name.includes('.')) throw new Error(`chained search parameter "${key}" is not supported`);
  const def = searchParam(type, name);
  if (!def) throw new Error(`search parameter "${name}" is not supported on ${type}`);
  const list = values(raw);
  if (list.length === 0) throw new Error(`search parameter "${key}" has no value`);
  if (extra.length) throw new Error(`search parameter "${key}" has more than one modifier`);
  const refuseModifier = () => { if (modifier !== undefined) throw new Error(`the modifier :${modifier} of ${def.type} parameter "${name}" is not supported`); };
  switch (def.type) {
    case 'token': {
      refuseModifier();
      return { type: 'token', paths: def.paths, values: list.map((v) => tokenValue(name, v, def.paths.every((p) => p.shape === 'boolean'))) };
    }
    case 'date':
      refuseModifier();
      return { type: 'date', paths: def.paths, values: list.map((v) => parseDateRange(name, v)) };
    case 'reference': {
      const typed = modifier === undefined ? def.target : modifier;
      if (typed !== undefined && !RESOURCE_TYPES.includes(typed)) throw new Error(`the modifier :${modifier} of reference parameter "${name}" is not a resource type`);
      if (modifier !== undefined && def.target !== undefined && modifier !== def.target) throw new Error(`"${name}" references ${def.target} resources only, not ${modifier}`);
      return { type: 'reference', paths: def.paths, values: list.map((v) => referenceValue(name, v, typed, def.target)) };
    }
    case 'string': {
      if (modifier !== undefined && modifier !== 'exact' && modifier !== 'contains') {
        throw new Error(`the modifier :${modifier} of string parameter "${name}" is not supported (:exact and :contains are)`);
      }
      return { type: 'string', paths: def.paths, match: modifier === 'exact' ? 'exact' : modifier === 'contains' ? 'contains' : 'start', values: list };
    }
  }
}

function tokenValue(name: string, raw: string, boolean: boolean): TokenValue {
  const bar = raw.indexOf('|');
  if (boolean) {
    if (raw !== 'true' && raw !== 'false') throw new Error(`${name} takes true or false, got "${raw}"`);
    return { code: raw };
  }
  if (bar < 0) return { code: raw };
  const system = raw.slice(0, bar);
  const code = raw.slice(bar + 1);
  if (code.includes('|')) throw new Error(`${name} "${raw}" is not a token (code, system|code, |code or system|)`);
  return { system: system === '' ? null : system, ...(code === '' ? {} : { code }) };
}

function referenceValue(name: string, raw: string, typed: string | undefined, target: string | undefined): { type?: string; id: string } {
  const parts = raw.replace(/^https?:\/\/[^?#]*?\/(?=[A-Z][A-Za-z]+\/[^/]+$)/, '').split('/');
  const [refType, id] = parts.length === 2 ? [parts[0], parts[1]!] : parts.length === 1 ? [typed, parts[0]!] : [undefined, ''];
  if (!ID.test(id) || (refType !== undefined && !RESOURCE_TYPES.includes(refType))) {
    throw new Error(`${name} "${raw}" is not a reference (Type/id, id, or an absolute URL ending in Type/id)`);
  }
  if (typed !== undefined && refType !== typed) throw new Error(`${name} "${raw}" must reference a ${typed}`);
  if (target !== undefined && refType !== target) throw new Error(`${name} "${raw}" must reference a ${target}`);
  return refType === undefined ? { id } : { type: refType, id };
}
