/**
 * SPEC §10 "failed logins are rate-limited": per address and per client id, 429 + Retry-After
 * before any password hash; the right client still gets in from another address; a credential
 * verified before keeps working from everywhere.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import net from 'node:net';
import fs from 'node:fs';
import { basic, startTestServer, ROOT_SECRET, type TestServer } from '../helpers/server.ts';
import { addClient } from '../helpers/clients.ts';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { spawnServer, type Child } from '../helpers/child-server.ts';
import { loginLimiter } from '../../src/auth/login-limiter.ts';

const LIMIT = 5;

/** A GET from a given loopback source address (127.0.0.x), over a plain socket. */
function getFrom(url: string, localAddress: string, pathname: string, authorization: string): Promise<{ status: number; headers: string; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port), localAddress });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const end = text.indexOf('\r\n\r\n');
      resolve({ status: Number(text.split(' ')[1]), headers: text.slice(0, end).toLowerCase(), body: text.slice(end + 4) });
    });
    socket.write(`GET ${pathname} HTTP/1.1\r\nhost: x\r\nauthorization: ${authorization}\r\nconnection: close\r\n\r\n`);
  });
}

describe('in process', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ FHIRHOSE_LOGIN_FAILURES_PER_MINUTE: String(LIMIT) });
    await addClient(server, 'c', [{ engine: 'allow' }]);
    await server.sql`insert into patient (id, txid, status, resource) values ('p1', 1, 'created', '{}')`;
  });
  afterAll(async () => { await server.stop(); });

  test('wrong secrets for a client: 401 up to the limit, then 429 + Retry-After naming the limit; the right client still gets in from another address', async () => {
    const wrong = basic('c', 'nope');
    for (let i = 0; i < LIMIT; i++) expect((await getFrom(server.url, '127.0.0.11', '/Patient/p1', wrong)).status).toBe(401);
    const refused = await getFrom(server.url, '127.0.0.11', '/Patient/p1', wrong);
    expect(refused.status).toBe(429);
    expect(refused.headers).toMatch(/retry-after: \d+/);
    const outcome = JSON.parse(refused.body) as { resourceType: string; message: string; issue: { code: string }[] };
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.message).toContain('FHIRHOSE_LOGIN_FAILURES_PER_MINUTE');
    expect(outcome.issue[0]!.code).toBe('throttled');
    // the right secret from the flooding address is refused too (no hash for it either) ...
    expect((await getFrom(server.url, '127.0.0.11', '/Patient/p1', basic('c', 'c-secret'))).status).toBe(429);
    // ... but from a clean address the client gets in although its id is locked
    const ok = await getFrom(server.url, '127.0.0.12', '/Patient/p1', basic('c', 'c-secret'));
    expect(ok.status).toBe(200);
    // a third address gets one guess for the locked id, then 429
    expect((await getFrom(server.url, '127.0.0.13', '/Patient/p1', wrong)).status).toBe(401);
    expect((await getFrom(server.url, '127.0.0.13', '/Patient/p1', wrong)).status).toBe(429);
    // root, from its usual address, is served meanwhile
    expect((await server.request('/Patient/p1')).status).toBe(200);
  });

  test('one address guessing many client ids is locked after the limit, for every id', async () => {
    for (let i = 0; i < LIMIT; i++) expect((await getFrom(server.url, '127.0.0.21', '/Patient/p1', basic(`guess-${i}`, 'x'))).status).toBe(401);
    const refused = await getFrom(server.url, '127.0.0.21', '/Patient/p1', basic('another-id', 'x'));
    expect(refused.status).toBe(429);
    expect(refused.body).toContain('from 127.0.0.21');
    expect((await getFrom(server.url, '127.0.0.22', '/Patient/p1', basic('root', ROOT_SECRET))).status).toBe(200);
  });

  test('a credential verified before keeps working from a locked address: it costs no hash', async () => {
    const good = basic('c', 'c-secret');
    expect((await getFrom(server.url, '127.0.0.31', '/Patient/p1', good)).status).toBe(200);
    for (let i = 0; i < LIMIT; i++) await getFrom(server.url, '127.0.0.31', '/Patient/p1', basic('c', `wrong-${i}`));
    expect((await getFrom(server.url, '127.0.0.31', '/Patient/p1', basic('c', 'wrong'))).status).toBe(429);
    expect((await getFrom(server.url, '127.0.0.31', '/Patient/p1', good)).status).toBe(200);
  });
});

describe('limiter', () => {
  test('failures leave the window after a minute; keys are bounded', () => {
    let t = 1_000_000;
    const limiter = loginLimiter(2, () => t);
    limiter.failed('x', 'a');
    limiter.failed('x', 'a');
    expect(() => limiter.check('x', 'a')).toThrow('retry in 60 s');
    t += 30_000;
    expect(() => limiter.check('x', 'a')).toThrow('retry in 30 s');
    t += 30_001;
    expect(() => limiter.check('x', 'a')).not.toThrow();
    for (let i = 0; i < 25_000; i++) limiter.failed(`id-${i}`, `10.0.${i >> 8}.${i & 255}`);
    expect(() => limiter.check('id-24999', '10.9.9.9')).not.toThrow(); // one failure: under the limit
  });

  test('0 turns it off', () => {
    const limiter = loginLimiter(0);
    for (let i = 0; i < 100; i++) limiter.failed('x', 'a');
    expect(() => limiter.check('x', 'a')).not.toThrow();
  });
});

describe('child process', () => {
  let child: Child;
  beforeAll(async () => {
    child = await spawnServer(await freshDatabase(), await freePort(), { FHIRHOSE_LOG: 'quiet', FHIRHOSE_LOGIN_FAILURES_PER_MINUTE: String(LIMIT) });
  }, 60_000);
  afterAll(async () => { child.proc.kill('SIGTERM'); await child.proc.exited; }, 30_000);

  /** CPU seconds the process has used (user + system), from /proc. */
  function cpu(pid: number): number {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  }

  test('a flood of 300 wrong passwords costs the limit in hashes, not 300: cheap 429s while root is served', async () => {
    const wrong = basic('root', 'guess');
    const cpu0 = cpu(child.proc.pid);
    const statuses: number[] = [];
    for (let round = 0; round < 30; round++) {
      const batch = await Promise.all(Array.from({ length: 10 }, () => fetch(`${child.url}/Patient/x`, { headers: { authorization: wrong } }).then((r) => r.status)));
      statuses.push(...batch);
      // the right client, from another address, is served meanwhile although its id is locked
      if (round % 10 === 0) expect((await getFrom(child.url, '127.0.0.42', '/metadata', basic('root', ROOT_SECRET))).status).toBe(200);
    }
    const used = cpu(child.proc.pid) - cpu0;
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(LIMIT + 10); // a first batch in flight together may all be checked
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(300 - LIMIT - 10);
    // 300 argon2 verifications take ≥ 6 s of CPU (22–30 ms each); 429s are nearly free
    expect(used).toBeLessThan(3);
  }, 120_000);
});
