/**
 * Failed logins are rate-limited per client id and per address (SPEC §10), so wrong passwords
 * cannot burn a core: each costs an argon2 hash (22–30 ms), and past the limit the attempt is
 * refused with 429 before any hash is computed.
 *
 * - An address with FHIRHOSE_LOGIN_FAILURES_PER_MINUTE failures in the last minute is refused.
 * - A client id with that many failures is refused too, except from an address with no failure
 *   in the last minute: so the right client still gets in from elsewhere while someone floods its
 *   id, and an attacker spread over many addresses gets one guess per address per minute.
 * - A credential verified before (auth.ts's cache) never reaches the limiter: it costs no hash.
 *
 * In memory, per server: replicas each count their own (documented in the README). Memory is
 * bounded: at most `limit` timestamps per key, and at most MAX_KEYS keys (the oldest go first).
 */
import { OperationOutcomeError } from '../fhir/outcome.ts';

const WINDOW_MS = 60_000;
const MAX_KEYS = 20_000;

export interface LoginLimiter {
  /** Throws 429 when this attempt may not be verified now. */
  check(clientId: string, address: string | undefined): void;
  failed(clientId: string, address: string | undefined): void;
}

export function loginLimiter(limit: number, now: () => number = Date.now): LoginLimiter {
  const failures = new Map<string, number[]>();

  /** Failures of `key` still in the window, oldest first. */
  function recent(key: string): number[] {
    const list = failures.get(key);
    if (!list) return [];
    const from = now() - WINDOW_MS;
    while (list.length && list[0]! <= from) list.shift();
    if (!list.length) failures.delete(key);
    return list;
  }

  function refuse(what: string, list: number[]): never {
    const retry = Math.max(1, Math.ceil((list[0]! + WINDOW_MS - now()) / 1000));
    throw new OperationOutcomeError('throttled',
      `Too many failed logins ${what}: ${list.length} in the last minute (FHIRHOSE_LOGIN_FAILURES_PER_MINUTE is ${limit}); retry in ${retry} s`,
      { headers: { 'Retry-After': String(retry) } });
  }

  return {
    check(clientId, address) {
      if (limit <= 0) return;
      const fromAddress = address === undefined ? [] : recent(`a:${address}`);
      if (fromAddress.length >= limit) refuse(`from ${address}`, fromAddress);
      const forClient = recent(`c:${clientId}`);
      if (forClient.length >= limit && (address === undefined || fromAddress.length > 0)) refuse(`for client "${clientId}"`, forClient);
    },
    failed(clientId, address) {
      if (limit <= 0) return;
      for (const key of [`c:${clientId}`, ...(address === undefined ? [] : [`a:${address}`])]) {
        const list = recent(key);
        list.push(now());
        if (list.length > limit) list.shift();
        failures.delete(key); // re-inserted last: Map order is then oldest activity first
        failures.set(key, list);
      }
      while (failures.size > MAX_KEYS) failures.delete(failures.keys().next().value!);
    },
  };
}
