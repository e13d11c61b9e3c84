import { afterAll, beforeAll, expect, test } from 'bun:test';
import dgram from 'node:dgram';
import { isDnsServer, resolveAddresses, ResolveError } from '../../src/streams/resolve.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns.ts';

let dns: DnsServer;

beforeAll(async () => {
  dns = await startDnsServer((name) => {
    if (name === 'both.test') return ['10.1.2.3', '10.1.2.4', 'fd00::1:2'];
    if (name === 'six.test') return ['::1'];
    return [];
  });
});
afterAll(() => dns.stop());

test('without FHIRHOSE_DNS_SERVERS the system resolver answers (/etc/hosts included); an IP is its own answer', async () => {
  expect(await resolveAddresses('localhost')).toContain('127.0.0.1');
  expect(await resolveAddresses('192.0.2.7', [dns.address])).toEqual(['192.0.2.7']);
  expect(await resolveAddresses('::1', [dns.address])).toEqual(['::1']);
  expect(dns.queries).toEqual([]);
});

test('with configured servers, A and AAAA answers are asked of them and returned together', async () => {
  expect(await resolveAddresses('both.test', [dns.address])).toEqual(['10.1.2.3', '10.1.2.4', 'fd00::1:2']);
  expect(await resolveAddresses('six.test', [dns.address])).toEqual(['::1']);
  expect(dns.of('both.test').map((q) => q.type).sort()).toEqual(['A', 'AAAA']);
});

test('a name the configured servers do not know fails with the resolver code; so does a server that never answers', async () => {
  const unknown = await resolveAddresses('nothing.test', [dns.address]).catch((e: unknown) => e);
  expect(unknown).toBeInstanceOf(ResolveError);
  expect((unknown as ResolveError).code).toMatch(/^E[A-Z]+$/);
  // a UDP socket that reads queries and answers nothing: the query times out (2 tries of 2 s)
  const mute = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => mute.bind(0, '127.0.0.1', resolve));
  try {
    const silent = await resolveAddresses('both.test', [`127.0.0.1:${mute.address().port}`]).catch((e: unknown) => e);
    expect(silent).toBeInstanceOf(ResolveError);
    expect((silent as ResolveError).code).toBe('ETIMEOUT');
  } finally {
    mute.close();
  }
});

test('DNS server addresses: ip, ip:port, [ipv6]:port; not names, not bad ports, not a bracketed IPv4', () => {
  for (const ok of ['10.0.0.2', '127.0.0.1:5353', '::1', 'fd00::53', '[::1]:53', '[fd00::53]:5353']) expect({ ok, valid: isDnsServer(ok) }).toEqual({ ok, valid: true });
  for (const bad of ['dns.example', '10.0.0.2:0', '10.0.0.2:65536', '[10.0.0.2]:53', '10.0.0:53', '[::1]', 'udp://10.0.0.2', '']) expect({ bad, valid: isDnsServer(bad) }).toEqual({ bad, valid: false });
});
