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
  const obj = pattern as Record<string, unknown>;
  if ('$one-of' in obj) return Array.isArray(obj['$one-of']) && obj['$one-of'].some((p) => matcho(p, value));
  if ('$enum' in obj) return Array.isArray(obj['$enum']) && obj['$enum'].some((v) => v === value);
  if (value === null || typeof value !== 'object') return false;
  const target = value as Record<string, unknown>;
  return Object.entries(obj).every(([k, p]) => matcho(p, target[k]));
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
