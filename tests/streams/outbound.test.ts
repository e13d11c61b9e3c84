import { afterAll, beforeAll, expect, test } from 'bun:test';
import { OperationOutcomeError } from '../../src/fhir/outcome.ts';
import { MAX_REDIRECTS, checkDestination, fetchConfined, isForbiddenAddress } from '../../src/streams/outbound.ts';
import { startDnsServer } from '../helpers/dns.ts';

const describe = (what: string) => `Cannot load "x": ${what}`;
const open = { connectTimeoutMs: 2000 };
let server: ReturnType<typeof Bun.serve>;
let base: string;

beforeAll(() => {
  server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch(request) {
      const { pathname } = new URL(request.url);
      const loop = /^\/loop\/(\d+)$/.exec(pathname);
      if (loop && Number(loop[1]) < 10) return Response.redirect(`/loop/${Number(loop[1]) + 1}`, 302);
      return new Response('{"ok":true}\n');
    },
  });
  base = `http://127.0.0.1:${server.port}`;
});
afterAll(() => server.stop(true));

async function refusal(promise: Promise<unknown>): Promise<OperationOutcomeError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(OperationOutcomeError);
    return error as OperationOutcomeError;
  }
  throw new Error('expected a refusal');
}

test('link-local and cloud metadata addresses are forbidden; loopback and private ones are not', () => {
  for (const a of ['169.254.169.254', '169.254.0.1', '169.254.170.2', '100.100.100.200', 'fe80::1', 'FEBF::1', 'fd00:ec2::254', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe']) {
    expect({ a, forbidden: isForbiddenAddress(a) }).toEqual({ a, forbidden: true });
  }
  for (const a of ['127.0.0.1', '::1', '10.0.0.1', '192.168.1.1', '8.8.8.8', 'fec0::1', 'fd00::1']) {
    expect({ a, forbidden: isForbiddenAddress(a) }).toEqual({ a, forbidden: false });
  }
});

test('metadata hosts are refused in every spelling the URL parser accepts, before any connection', async () => {
  for (const url of [
    'http://169.254.169.254/latest/meta-data/', 'http://2852039166/', 'http://0xa9fea9fe/', 'http://0251.0376.0251.0376/',
    'http://[fe80::1]/', 'http://[::ffff:169.254.169.254]/', 'http://metadata.google.internal/computeMetadata/v1/', 'http://METADATA.GOOGLE.INTERNAL./',
    'http://[fd00:ec2::254]/',
  ]) {
    const error = await refusal(checkDestination(new URL(url), open, describe));
    expect({ url, code: error.code }).toEqual({ url, code: 'forbidden' });
    expect(error.message).toStartWith('Cannot load "x": ');
  }
});

test('by default loopback is allowed; with FHIRHOSE_SOURCE_ALLOW only URLs under a prefix are', async () => {
  await checkDestination(new URL(`${base}/a.ndjson`), open, describe);
  const allow = { ...open, allow: [`${base}/data/`, 'https://example.org/exports'] };
  await checkDestination(new URL(`${base}/data/Patient.ndjson`), allow, describe);
  for (const url of [
    `${base}/other/Patient.ndjson`, `http://localhost:${server.port}/data/Patient.ndjson`, `https://127.0.0.1:${server.port}/data/x`,
    'https://example.org.evil.net/exports/x', 'https://example.org@evil.net/exports/x', 'https://example.org:444/exports/x',
  ]) {
    const error = await refusal(checkDestination(new URL(url), allow, describe));
    expect({ url, message: error.message }).toMatchObject({ url, message: expect.stringContaining('FHIRHOSE_SOURCE_ALLOW') });
  }
});

test(`redirects are followed by hand up to ${MAX_REDIRECTS} times, then refused`, async () => {
  const { response, url } = await fetchConfined(new URL(`${base}/loop/${10 - MAX_REDIRECTS}`), open, { describe });
  expect(response.status).toBe(200);
  expect(url.pathname).toBe('/loop/10');
  await response.body?.cancel();
  const error = await refusal(fetchConfined(new URL(`${base}/loop/${9 - MAX_REDIRECTS}`), open, { describe }));
  expect(error.code).toBe('bad-gateway');
  expect(error.message).toContain(`redirected more than ${MAX_REDIRECTS} times`);
});

test('a name is fetched from the addresses its one answer gave: the next is tried when the first refuses the connection', async () => {
  // 127.0.0.3: nothing listens on the port there (ECONNREFUSED); then the real server
  const dns = await startDnsServer((name) => (name === 'two.test' ? ['127.0.0.3', '127.0.0.1', '::1'] : []));
  try {
    const limits = { ...open, dnsServers: [dns.address] };
    const { response, url } = await fetchConfined(new URL(`http://two.test:${server.port}/loop/10`), limits, { describe });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('{"ok":true}\n');
    expect(url.href).toBe(`http://two.test:${server.port}/loop/10`);
    expect(dns.queries.map((q) => `${q.name} ${q.type} ${q.answered.join(' ')}`).sort()).toEqual(['two.test A 127.0.0.3 127.0.0.1', 'two.test AAAA ::1']);
    const error = await refusal(fetchConfined(new URL(`http://none.test:${server.port}/`), limits, { describe }));
    expect(error.code).toBe('bad-gateway');
    expect(error.message).toMatch(new RegExp(`^Cannot load "x": http://none.test:${server.port}/ is unreachable \\(E[A-Z]+\\)$`));
  } finally {
    await dns.stop();
  }
});
