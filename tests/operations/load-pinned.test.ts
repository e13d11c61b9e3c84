/**
 * SPEC §10, outbound fetches are confined, against DNS rebinding: a name is resolved once, through a
 * real DNS server (FHIRHOSE_DNS_SERVERS), its answer checked, and the connection made to that
 * answer — with the name in the Host header and, for https, as the TLS name the certificate is
 * checked against. A name whose later answers are 169.254.169.254 (or another server) is never
 * fetched from there; every redirect hop is resolved, checked and pinned again. Meanwhile an
 * ordinary client reads a Patient within a bound.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import path from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns.ts';
import { count, patients, startImport, waitFor } from '../helpers/import-sources.ts';
import { whileReading } from '../helpers/neighbour.ts';
import { client, spawnServer, type Child } from '../helpers/child-server.ts';
import { freePort, freshDatabase } from '../helpers/database.ts';

const TLS = path.resolve(import.meta.dir, '../fixtures/tls');
const METADATA = '169.254.169.254';

interface Seen { path: string; host: string | null; method?: string }
interface Recording { server: ReturnType<typeof Bun.serve>; seen: Seen[] }

/** A source on `hostname` that records each request's path and Host header; `/hop/<name>` redirects. */
function recordingSource(hostname: string, port: number, prefix: string, tls?: { cert: string; key: string }): Recording {
  const seen: Seen[] = [];
  const server = Bun.serve({
    hostname, port, ...(tls && { tls }),
    fetch(request) {
      const url = new URL(request.url);
      seen.push({ path: url.pathname, host: request.headers.get('host'), ...(request.method !== 'GET' && { method: request.method }) });
      const hop = /^\/hop\/([^/]+)$/.exec(url.pathname);
      if (hop) return new Response(null, { status: 302, headers: { location: `http://${hop[1]}:${url.port}/hopped.ndjson` } });
      return new Response(patients(3, `${prefix}${url.pathname.replace(/\W/g, '')}`));
    },
  });
  return { server, seen };
}

let dns: DnsServer;
let server: TestServer;
let real: Recording;
let decoy: Recording;
let port: number;

beforeAll(async () => {
  dns = await startDnsServer((name, nth) => {
    switch (name) {
      case 'rebind.test': case 'hop-rebind.test': return nth === 0 ? ['127.0.0.1'] : [METADATA];
      case 'flip.test': return [nth % 2 === 0 ? '127.0.0.1' : '127.0.0.2'];
      case 'meta.test': return [METADATA];
      case 'mixed.test': return ['127.0.0.1', METADATA];
      case 'nowhere.test': return [];
      default: return ['127.0.0.1'];
    }
  });
  // the real source on 127.0.0.1 and a decoy on 127.0.0.2, both on one port: only the address differs
  for (let attempt = 0; ; attempt++) {
    real = recordingSource('127.0.0.1', 0, 'real');
    port = real.server.port!;
    try {
      decoy = recordingSource('127.0.0.2', port, 'decoy');
      break;
    } catch (error) {
      real.server.stop(true);
      if (attempt === 5) throw error;
    }
  }
  server = await startTestServer({ FHIRHOSE_DNS_SERVERS: dns.address, FHIRHOSE_SOURCE_CONNECT_TIMEOUT: '10' });
  expect((await load(`http://127.0.0.1:${port}/seed.ndjson`)).status).toBe(200);
});

afterAll(async () => {
  await server.stop();
  real.server.stop(true);
  decoy.server.stop(true);
  await dns.stop();
});

async function load(source: string, target: Pick<TestServer, 'request'> = server) {
  const res = await target.request('/Patient/$load', { method: 'POST', json: { source, method: 'copy' } });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

const aQueries = (name: string) => dns.of(name).filter((q) => q.type === 'A');

test('$load connects to the address the one DNS answer gave, Host naming the name; the rebound answer is never asked for', async () => {
  const url = `http://rebind.test:${port}/rebind.ndjson`;
  const first = await whileReading(server, 'realseedndjson-1', load(url));
  expect({ status: first.status, message: first.body.message }).toEqual({ status: 200, message: undefined });
  expect(await server.sql`select id from patient where id like 'realrebindndjson-%' order by id`).toHaveLength(3);
  expect(real.seen.filter((s) => s.path === '/rebind.ndjson')).toEqual([{ path: '/rebind.ndjson', host: `rebind.test:${port}` }]);
  // one A query: the check's; the connection asked nothing more (the next answer would be 169.254.169.254)
  expect(aQueries('rebind.test').map((q) => q.answered)).toEqual([['127.0.0.1']]);

  // the same URL again: now the name answers the metadata address, and the check sees it
  const second = await whileReading(server, 'realseedndjson-1', load(url));
  expect(second.status).toBe(403);
  expect(second.body.message).toBe(`Cannot load "rebind.ndjson": http://rebind.test:${port}/rebind.ndjson resolves to ${METADATA}, a link-local or cloud metadata address`);
  expect(real.seen.filter((s) => s.path === '/rebind.ndjson')).toHaveLength(1);
  expect(decoy.seen).toEqual([]);
});

test('each fetch goes to the address checked for it: a name answering 127.0.0.1 and 127.0.0.2 in turn', async () => {
  const before = aQueries('flip.test').length;
  for (let i = 0; i < 4; i++) {
    const { status } = await load(`http://flip.test:${port}/flip${i}.ndjson`);
    expect(status).toBe(200);
  }
  const answers = aQueries('flip.test').slice(before).map((q) => q.answered[0]);
  expect(answers).toEqual(['127.0.0.1', '127.0.0.2', '127.0.0.1', '127.0.0.2']);
  // load i was served by the server at the address of answer i, and only by it
  const servedBy = (i: number): (string | undefined)[] => [real, decoy].filter((r) => r.seen.some((s) => s.path === `/flip${i}.ndjson`)).map((r) => (r === real ? '127.0.0.1' : '127.0.0.2'));
  expect([0, 1, 2, 3].map(servedBy)).toEqual(answers.map((a) => [a]));
  expect(decoy.seen.map((s) => s.host)).toEqual([`flip.test:${port}`, `flip.test:${port}`]);
  expect(await count(server, 'patient')).toBe(3 /* seed */ + 3 /* rebind */ + 4 * 3);
});

test('a name resolving to a metadata address, alone or among others, is refused 403 before any connection; no answer is 502', async () => {
  const seen = real.seen.length;
  for (const name of ['meta.test', 'mixed.test']) {
    const { status, body } = await whileReading(server, 'realseedndjson-1', load(`http://${name}:${port}/Patient.ndjson?token=secret`));
    expect({ name, status }).toEqual({ name, status: 403 });
    expect(body.message).toBe(`Cannot load "Patient.ndjson": http://${name}:${port}/Patient.ndjson resolves to ${METADATA}, a link-local or cloud metadata address`);
  }
  const { status, body } = await load(`http://nowhere.test:${port}/Patient.ndjson`);
  expect(status).toBe(502);
  expect(body.message).toMatch(new RegExp(`^Cannot load "Patient.ndjson": http://nowhere.test:${port}/Patient.ndjson is unreachable \\(E[A-Z]+\\)$`));
  expect(real.seen.length).toBe(seen);
});

test('a redirect to a name that rebinds is resolved, checked and pinned per hop', async () => {
  const first = await whileReading(server, 'realseedndjson-1', load(`http://start.test:${port}/hop/hop-rebind.test`));
  expect({ status: first.status, message: first.body.message }).toEqual({ status: 200, message: undefined });
  expect(real.seen.filter((s) => s.path.startsWith('/hop'))).toEqual([
    { path: '/hop/hop-rebind.test', host: `start.test:${port}` },
    { path: '/hopped.ndjson', host: `hop-rebind.test:${port}` },
  ]);
  expect(aQueries('hop-rebind.test')).toHaveLength(1);

  const second = await whileReading(server, 'realseedndjson-1', load(`http://start.test:${port}/hop/hop-rebind.test`));
  expect(second.status).toBe(403);
  expect(second.body.message).toBe(
    `Cannot load "hop-rebind.test": http://start.test:${port}/hop/hop-rebind.test redirected to http://hop-rebind.test:${port}/hopped.ndjson, which is refused: `
    + `http://hop-rebind.test:${port}/hopped.ndjson resolves to ${METADATA}, a link-local or cloud metadata address`,
  );
  expect(real.seen.filter((s) => s.path === '/hopped.ndjson')).toHaveLength(1);
  expect(decoy.seen.filter((s) => s.path.startsWith('/hop'))).toEqual([]);
});

test('$import inputs are pinned too: the start check, then each request (HEAD for the size, GET) after its own, Host naming the name', async () => {
  const res = await startImport(server, { id: 'pinned', inputs: [{ type: 'Patient', url: `http://import.test:${port}/import.ndjson` }] });
  expect(res.status).toBe(201);
  const session = await waitFor(server, 'pinned', (s) => s.status === 'done' || s.status === 'error');
  expect(session).toMatchObject({ status: 'done' });
  expect(await server.sql`select id from patient where id like 'realimportndjson-%'`).toHaveLength(3);
  const requests = real.seen.filter((s) => s.path === '/import.ndjson');
  expect(requests).toContainEqual({ path: '/import.ndjson', host: `import.test:${port}` });
  expect(requests.every((s) => s.host === `import.test:${port}`)).toBe(true);
  // the check at start connects nowhere; every request had a check of its own
  expect(aQueries('import.test')).toHaveLength(1 + requests.length);
});

test('https: the connection goes to the checked address and the certificate is verified against the name', async () => {
  const cert = await Bun.file(path.join(TLS, 'pin.test.crt')).text();
  const key = await Bun.file(path.join(TLS, 'pin.test.key')).text();
  const secure = recordingSource('127.0.0.1', 0, 'tls', { cert, key });
  // a child process: only a server started with NODE_EXTRA_CA_CERTS trusts the test certificate
  let child: Child | undefined;
  try {
    child = await spawnServer(await freshDatabase(), await freePort(), {
      NODE_EXTRA_CA_CERTS: path.join(TLS, 'pin.test.crt'), FHIRHOSE_DNS_SERVERS: dns.address, FHIRHOSE_LOG: 'quiet',
    });
    const api = client(child);
    const tlsPort = secure.server.port!;
    const ok = await load(`https://pin.test:${tlsPort}/secure.ndjson`, api);
    expect({ status: ok.status, message: ok.body.message }).toEqual({ status: 200, message: undefined });
    expect(secure.seen).toEqual([{ path: '/secure.ndjson', host: `pin.test:${tlsPort}` }]);

    // the same server and address under a name its certificate does not carry: refused by the TLS check
    for (const source of [`https://other.test:${tlsPort}/secure.ndjson`, `https://127.0.0.1:${tlsPort}/secure.ndjson`]) {
      const wrong = await load(source, api);
      expect({ source, status: wrong.status }).toEqual({ source, status: 502 });
      expect(wrong.body.message).toContain('is unreachable (ERR_TLS_CERT_ALTNAME_INVALID)');
    }
    expect(secure.seen).toHaveLength(1);
    const rows = await api.request('/Patient/tlssecurendjson-1');
    expect(rows.status).toBe(200);
  } finally {
    child?.proc.kill();
    await child?.proc.exited;
    secure.server.stop(true);
  }
});
