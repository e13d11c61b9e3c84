/**
 * The `matcho` policy engine, the subset of Aidbox's that users need (SPEC §3): a pattern object
 * matched against the request. Strings match exactly, or as a regex when they start with `#`;
 * `{$one-of: [p…]}` matches when any pattern does; `{$enum: [v…]}` when the value is one of them;
 * nested objects match recursively; an array pattern needs each of its items to match some item.
 */
type Pattern = unknown;

export function matcho(pattern: Pattern, value: unknown): boolean {
  if (typeof pattern === 'string') {
    if (pattern.startsWith('#')) return typeof value === 'string' && safeRegex(pattern.slice(1)).test(value);
    return value === pattern;
  }
  if (pattern === null || typeof pattern !== 'object') return value === pattern;
  if (Array.isArray(pattern)) {
    return Array.isArray(value) && pattern.every((p) => value.some((v) => matcho(p, v)));
  }
  // `$one-of` and `$enum` constrain the value itself; the other keys of the same object still
  // apply (all must hold), so `{request-method: get, $one-of: […]}` cannot widen access.
  const { '$one-of': oneOf, '$enum': choices, ...fields } = pattern as Record<string, unknown>;
  if (oneOf !== undefined && !(Array.isArray(oneOf) && oneOf.some((p) => matcho(p, value)))) return false;
  if (choices !== undefined && !(Array.isArray(choices) && choices.some((v) => v === value))) return false;
  const keys = Object.keys(fields);
  if (keys.length === 0 && (oneOf !== undefined || choices !== undefined)) return true;
  if (value === null || typeof value !== 'object') return false;
  const target = value as Record<string, unknown>;
  return keys.every((k) => matcho(fields[k], target[k]));
}

const cache = new Map<string, RegExp>();
const NEVER = /(?!)/;

function safeRegex(source: string): RegExp {
  let re = cache.get(source);
  if (!re) {
    try {
      re = new RegExp(source);
    } catch {
      re = NEVER; // a policy with a broken regex allows nothing
    }
    if (cache.size > 1000) cache.clear();
    cache.set(source, re);
  }
  return re;
}
