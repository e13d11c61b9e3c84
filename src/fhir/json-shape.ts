/**
 * Shapes of JSON that parse but must not be stored (SPEC §10: a bad byte is a bad line): nesting
 * deeper than MAX_JSON_DEPTH (the recursive walks of validation, strip-nulls and PostgreSQL's own
 * jsonb parser would overflow their stacks on 100,000 levels), and numbers too large for a double,
 * which JSON.parse turns into Infinity and JSON.stringify then writes as `null`: a silent change of
 * the data, not a load.
 */

/** Objects and arrays nested deeper than this are refused, in ndjson lines and request bodies. */
export const MAX_JSON_DEPTH = 200;

const OPEN_BRACE = 123;
const OPEN_BRACKET = 91;
const CLOSE_BRACE = 125;
const CLOSE_BRACKET = 93;
const QUOTE = 34;
const BACKSLASH = 92;

/**
 * True when the JSON text `text` nests objects/arrays deeper than `max`. Brackets inside strings
 * do not count. A line can only be that deep when it holds more than `max` opening brackets, so
 * the exact scan runs only when a cheap count of `[`/`{` says it might (rare in FHIR data: a
 * Synthea Patient line holds about 40).
 */
export function textDeeperThan(text: string, max = MAX_JSON_DEPTH): boolean {
  if (text.length <= 2 * max) return false;
  if (!enoughOpeners(text, max)) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > max) return true;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    }
  }
  return false;
}

/** More than `max` of `{` and `[` in `text` (native `indexOf` jumps, stopping as soon as it is so). */
function enoughOpeners(text: string, max: number): boolean {
  let count = 0;
  for (let i = text.indexOf('{'); i >= 0; i = text.indexOf('{', i + 1)) if (++count > max) return true;
  for (let i = text.indexOf('['); i >= 0; i = text.indexOf('[', i + 1)) if (++count > max) return true;
  return false;
}

/** True when the parsed `value` nests objects/arrays deeper than `max` (walks at most `max` levels). */
export function valueDeeperThan(value: unknown, max = MAX_JSON_DEPTH): boolean {
  return deeper(value, max);
}

function deeper(value: unknown, budget: number): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (budget === 0) return true;
  if (Array.isArray(value)) {
    for (const item of value) if (deeper(item, budget - 1)) return true;
    return false;
  }
  for (const key in value) if (deeper((value as Record<string, unknown>)[key], budget - 1)) return true;
  return false;
}

/** True when `value` holds a number JSON.parse could not keep (past ~1.8e308 it becomes ±Infinity). */
export function hasNonFinite(value: unknown): boolean {
  if (typeof value === 'number') return !Number.isFinite(value);
  if (value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.some(hasNonFinite);
  for (const key in value) if (hasNonFinite((value as Record<string, unknown>)[key])) return true;
  return false;
}
