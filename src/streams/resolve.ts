/**
 * The one name resolution of an outbound fetch (SPEC §10: outbound fetches are confined). The
 * addresses returned here are both the ones checked and the ones connected to (outbound.ts pins
 * the connection to them), so a DNS server that answers differently the second time (rebinding)
 * is never asked a second time.
 *
 * Without FHIRHOSE_DNS_SERVERS the system resolver answers (getaddrinfo: /etc/hosts, then DNS);
 * with it, only those servers do, asked for A and AAAA records (no /etc/hosts).
 */
import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';

/** How long one query to a configured DNS server may take, and how often it is sent. */
const QUERY_TIMEOUT_MS = 2000;
const QUERY_TRIES = 2;

/** A failed resolution: `code` is the resolver's (ENOTFOUND, ETIMEOUT, …). */
export class ResolveError extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/**
 * The addresses of `host` (an IP literal is its own answer), in the resolver's order. `servers`:
 * FHIRHOSE_DNS_SERVERS (`ip` or `ip:port`, `[v6]:port`); undefined: the system resolver.
 */
export async function resolveAddresses(host: string, servers?: string[]): Promise<string[]> {
  if (isIP(host)) return [host];
  if (servers === undefined) {
    try {
      return (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);
    } catch (error) {
      throw new ResolveError((error as { code?: string }).code ?? 'DNS lookup failed');
    }
  }
  const resolver = new Resolver({ timeout: QUERY_TIMEOUT_MS, tries: QUERY_TRIES });
  resolver.setServers(servers);
  const [v4, v6] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
  const addresses = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
  if (addresses.length > 0) return addresses;
  const failed = [v4, v6].find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
  // an empty answer to both (NODATA) is as unreachable as no such name
  throw new ResolveError((failed?.reason as { code?: string } | undefined)?.code ?? 'ENOTFOUND');
}

/** `ip`, `ip:port` or `[ipv6]:port`: the forms `Resolver.setServers` takes. */
export function isDnsServer(value: string): boolean {
  if (isIP(value)) return true;
  const m = /^(?:\[([^\]]+)\]|(\d+\.\d+\.\d+\.\d+)):(\d{1,5})$/.exec(value);
  if (!m) return false;
  const ip = m[1] ?? m[2]!;
  const port = Number(m[3]);
  return (m[1] !== undefined ? isIP(ip) === 6 : isIP(ip) === 4) && port >= 1 && port <= 65535;
}
