/**
 * Every outbound fetch of a source goes through here (SPEC §10: outbound fetches are confined).
 * A URL is fetched only when it matches FHIRHOSE_SOURCE_ALLOW (when set) and its host resolves to
 * no link-local or cloud metadata address; redirects are followed by hand, each hop checked again,
 * at most MAX_REDIRECTS of them; the response headers must arrive within the connect timeout.
 *
 * Loopback and private addresses are allowed by default: a source on the same machine or network
 * is the common case (and the tests' sources listen on 127.0.0.1). The check resolves the name
 * itself, so a name pointing at 169.254.169.254 is refused like the address, and the connection is
 * pinned to the checked addresses: `fetch` is given the IP, with the name in the `Host` header and,
 * for https, as the TLS server name (SNI and the certificate check), so a DNS answer that changes
 * between the check and the connection (rebinding) is never asked for.
 */
import { isIP } from 'node:net';
import { OperationOutcomeError } from '../fhir/outcome.ts';
import { resolveAddresses, ResolveError } from './resolve.ts';

export const MAX_REDIRECTS = 5;

export interface OutboundLimits {
  /** URL prefixes; undefined: any http(s) URL not refused by address. */
  allow?: string[];
  connectTimeoutMs: number;
  /** FHIRHOSE_DNS_SERVERS; undefined: the system resolver. */
  dnsServers?: string[];
}

/** Names of metadata services that must never be fetched, whatever they resolve to. */
const METADATA_NAMES = new Set(['metadata.google.internal', 'metadata.goog', 'metadata', 'instance-data', 'instance-data.ec2.internal']);

/**
 * Fetches `url` with `init`, following up to MAX_REDIRECTS redirects, each checked by
 * `checkDestination`. Rejects with OperationOutcomeError: 'forbidden' (refused URL or redirect
 * target), 'timeout' (no response headers within the connect timeout), 'bad-gateway' (unreachable,
 * too many redirects). An abort of `init.signal` rejects with its reason. Messages never show
 * credentials or query strings; `describe` prefixes them (`Cannot load "x": `).
 */
export async function fetchConfined(
  url: URL,
  limits: OutboundLimits,
  init: FetchInit,
): Promise<{ response: Response; url: URL }> {
  let current = url;
  for (let hop = 0; ; hop++) {
    const addresses = await checkDestination(current, limits, init.describe);
    const response = await fetchWithin(current, addresses, limits.connectTimeoutMs, init);
    const location = response.headers.get('location');
    if (response.status < 300 || response.status > 399 || location === null) return { response, url: current };
    await response.body?.cancel().catch(() => {});
    if (hop === MAX_REDIRECTS) {
      throw new OperationOutcomeError('bad-gateway', init.describe(`${displayUrl(url)} redirected more than ${MAX_REDIRECTS} times`));
    }
    let next: URL;
    try {
      next = new URL(location, current);
    } catch {
      throw new OperationOutcomeError('bad-gateway', init.describe(`${displayUrl(current)} redirected to an invalid URL`));
    }
    const { describe } = init;
    const via = `${displayUrl(current)} redirected to ${displayUrl(next)}, which is refused: `;
    init = { ...init, describe: (what) => describe(via + what) };
    current = next;
  }
}

/**
 * Refuses `url` unless it is http(s), matches an allowed prefix (when a list is set), and its host
 * is not a metadata name and resolves to no link-local or metadata address. Returns the addresses
 * checked: the only ones the request may connect to.
 */
export async function checkDestination(url: URL, limits: OutboundLimits, describe: (what: string) => string): Promise<string[]> {
  const refuse = (why: string) => new OperationOutcomeError('forbidden', describe(`${displayUrl(url)} ${why}`));
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw refuse('is not an http(s) URL');
  if (limits.allow !== undefined && !limits.allow.some((prefix) => matchesPrefix(url, prefix))) {
    throw refuse('is not under any prefix of FHIRHOSE_SOURCE_ALLOW');
  }
  const host = url.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  if (METADATA_NAMES.has(host)) throw refuse('is a cloud metadata service');
  let addresses: string[];
  try {
    addresses = await resolveAddresses(host, limits.dnsServers);
  } catch (error) {
    const code = error instanceof ResolveError ? error.code : 'DNS lookup failed';
    throw new OperationOutcomeError('bad-gateway', describe(`${displayUrl(url)} is unreachable (${code})`));
  }
  const bad = addresses.find(isForbiddenAddress);
  if (bad !== undefined) throw refuse(`resolves to ${bad}, a link-local or cloud metadata address`);
  return addresses;
}

/** Link-local (169.254.0.0/16, fe80::/10, where the metadata services live) and known metadata addresses. */
export function isForbiddenAddress(address: string): boolean {
  const lower = address.toLowerCase();
  const v4 = isIP(lower) === 4 ? lower : mappedV4(lower);
  if (v4 !== undefined) {
    const [a, b] = v4.split('.').map(Number);
    // 100.100.100.200: Alibaba Cloud's metadata service.
    return (a === 169 && b === 254) || v4 === '100.100.100.200';
  }
  if (isIP(lower) !== 6) return false;
  const first = parseInt(lower.split(':')[0] || '0', 16);
  // fe80::/10 link-local; fd00:ec2::254 is AWS's IPv6 instance metadata address.
  // (URL and DNS answers give IPv6 in its compressed form.)
  return (first & 0xffc0) === 0xfe80 || lower === 'fd00:ec2::254';
}

/** The IPv4 address inside an IPv4-mapped IPv6 one: `::ffff:169.254.1.2` or (as URL writes it) `::ffff:a9fe:102`. */
function mappedV4(address: string): string | undefined {
  const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (dotted) return dotted[1];
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(address);
  if (!hex) return undefined;
  const [high, low] = [parseInt(hex[1]!, 16), parseInt(hex[2]!, 16)];
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

/**
 * Same scheme, host and port as `prefix` (compared parsed, so `http://a.org` never matches
 * `http://a.org.evil.net` or `http://a.org@evil.net`), and a path that starts with its path.
 */
function matchesPrefix(url: URL, prefix: string): boolean {
  let p: URL;
  try {
    p = new URL(prefix);
  } catch {
    return false;
  }
  return p.protocol === url.protocol && p.host === url.host && url.pathname.startsWith(p.pathname);
}

/**
 * An `Authorization` header for some origins (SPEC §13 `credentialHttpBasic`): sent to a hop only
 * when its origin (scheme, host and port) is one of them, so a redirect elsewhere never gets it.
 */
export interface OriginCredential {
  origins: string[];
  authorization: string;
}

export interface FetchInit {
  method?: string;
  signal?: AbortSignal;
  credential?: OriginCredential;
  /** More request headers (a Bulk Data kick-off's Accept and Prefer); never an Authorization. */
  headers?: Record<string, string>;
  /** A small request body (a kick-off's Parameters): resent on each redirect hop. */
  body?: string;
  describe: (what: string) => string;
}

/** Connection failures after which the next checked address is tried: nothing was sent. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ConnectionRefused', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

/**
 * Fetches `url` from one of `addresses` (those checked), in order: the next is tried only when a
 * connection to one could not be made. One connect timeout covers all of them.
 */
async function fetchWithin(url: URL, addresses: string[], timeoutMs: number, init: FetchInit): Promise<Response> {
  const connect = new AbortController();
  const timer = setTimeout(() => connect.abort(new Error('connect timeout')), timeoutMs);
  const signal = init.signal ? AbortSignal.any([init.signal, connect.signal]) : connect.signal;
  const headers: Record<string, string> = { ...init.headers };
  delete headers.authorization;
  if (init.credential?.origins.includes(url.origin)) headers.authorization = init.credential.authorization;
  try {
    for (let i = 0; ; i++) {
      const { target, host, serverName } = pinned(url, addresses[i]!);
      try {
        return await fetch(target, {
          method: init.method ?? 'GET', signal, redirect: 'manual',
          headers: host === undefined ? headers : { ...headers, host },
          ...(serverName !== undefined && { tls: { serverName } }),
          ...(init.body !== undefined && { body: init.body }),
        });
      } catch (error) {
        const code = (error as { code?: unknown } | undefined)?.code;
        if (signal.aborted || i === addresses.length - 1 || typeof code !== 'string' || !NOT_CONNECTED.has(code)) throw error;
      }
    }
  } catch (error) {
    if (init.signal?.aborted) throw init.signal.reason;
    if (connect.signal.aborted) {
      throw new OperationOutcomeError('timeout', init.describe(`${displayUrl(url)} sent no response within ${timeoutMs / 1000} s (FHIRHOSE_SOURCE_CONNECT_TIMEOUT)`));
    }
    const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
    const reason = typeof code === 'string' && code !== '' ? code : String(message ?? error);
    throw new OperationOutcomeError('bad-gateway', init.describe(`${displayUrl(url)} is unreachable (${reason})`), { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `url` with its host replaced by the checked `address`, so `fetch` resolves nothing; the name
 * travels in the `Host` header and, for https, as the TLS server name: Bun sends it as SNI and
 * verifies the certificate against it, not against the IP (tests/operations/load-pinned.test.ts).
 */
function pinned(url: URL, address: string): { target: URL; host?: string; serverName?: string } {
  const name = url.hostname.replace(/\.$/, '');
  if (isIP(url.hostname.replace(/^\[|\]$/g, ''))) return { target: url };
  const target = new URL(url);
  target.hostname = isIP(address) === 6 ? `[${address}]` : address;
  return { target, host: url.host, ...(url.protocol === 'https:' && { serverName: name }) };
}

/** Without credentials or query string: pre-signed URLs carry secrets, and messages are stored. */
export function displayUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}
