/**
 * SPEC §11: a changed secret or policy reaches every server at once. Three real fhirhose processes
 * on one database; a change through A (or by hand with SQL) must be refused by B and C on the next
 * requests, long before their caches would expire (10 s), so only the NOTIFY can have done it.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { spawnServer, type Child } from '../helpers/child-server.ts';
import { basic, ROOT_SECRET } from '../helpers/server.ts';
import { connect, type Sql } from '../../src/storage/db.ts';

const ROOT = basic('root', ROOT_SECRET);
/** Below the 10 s cache TTL of src/auth/auth.ts, counted from the request that filled the cache. */
const BEFORE_TTL_MS = 8_000;

const servers: Child[] = [];
let sql: Sql;

beforeAll(async () => {
  const url = await freshDatabase();
  sql = connect(url, { max: 2 });
  for (let i = 0; i < 3; i++) servers.push(await spawnServer(url, await freePort(), { FHIRHOSE_LOG: 'quiet' }));
}, 90_000);

afterAll(async () => {
  for (const s of servers) s.proc.kill('SIGTERM');
  await Promise.all(servers.map((s) => s.proc.exited));
  await sql.end();
});

const a = () => servers[0]!;
const b = () => servers[1]!;
const c = () => servers[2]!;

function call(server: Child, path: string, auth: string, init: { method?: string; json?: unknown } = {}): Promise<Response> {
  return fetch(server.url + path, {
    method: init.method ?? 'GET',
    headers: { authorization: auth, 'content-type': 'application/json' },
    body: init.json === undefined ? undefined : JSON.stringify(init.json),
  });
}

async function put(path: string, json: unknown, through = a()): Promise<void> {
  const res = await call(through, path, ROOT, { method: 'PUT', json });
  expect(res.status).toBeLessThan(300);
}

/**
 * Requests `path` on `server` until it answers `status`; returns the ms it took from `since`.
 * Fails if that takes until `since + BEFORE_TTL_MS`, when an expired cache could explain it.
 */
async function answersWithin(server: Child, path: string, auth: string, status: number, since: number): Promise<{ ms: number; requests: number }> {
  let last = 0;
  let requests = 0;
  while (Date.now() < since + BEFORE_TTL_MS) {
    last = (await call(server, path, auth)).status;
    requests++;
    if (last === status) return { ms: Date.now() - since, requests };
    await Bun.sleep(10);
  }
  throw new Error(`${server.url}${path} still answered ${last}, not ${status}, ${BEFORE_TTL_MS} ms after the change`);
}

describe('credential changes reach every server', () => {
  test('a secret changed through A is refused by B and C on the next requests, and the new one works everywhere', async () => {
    await put('/Client/rotating', { resourceType: 'Client', secret: 'old-secret', grant_types: ['basic'] });
    await put('/AccessPolicy/rotating-all', { resourceType: 'AccessPolicy', engine: 'allow', link: [{ resourceType: 'Client', id: 'rotating' }] });
    const oldAuth = basic('rotating', 'old-secret');
    // fill every server's credential cache with the old secret
    for (const s of servers) expect((await call(s, '/Patient', oldAuth)).status).toBe(200);
    const warm = Date.now();

    await put('/Client/rotating', { resourceType: 'Client', secret: 'new-secret', grant_types: ['basic'] });
    const changed = Date.now();
    const took = [await answersWithin(b(), '/Patient', oldAuth, 401, warm), await answersWithin(c(), '/Patient', oldAuth, 401, warm)];
    console.log(`old secret refused by B and C ${took.map((t) => `${t.ms - (changed - warm)} ms (request ${t.requests})`).join(' / ')} after A's 200`);
    for (const s of servers) {
      expect((await call(s, '/Patient', oldAuth)).status).toBe(401);
      expect((await call(s, '/Patient', basic('rotating', 'new-secret'))).status).toBe(200);
    }
  });

  test('a Client deleted by hand with SQL is refused by every server (the trigger covers writes outside the API)', async () => {
    await put('/Client/by-hand', { resourceType: 'Client', secret: 'hand-secret', grant_types: ['basic'] });
    await put('/AccessPolicy/by-hand-all', { resourceType: 'AccessPolicy', engine: 'allow', link: [{ resourceType: 'Client', id: 'by-hand' }] });
    const auth = basic('by-hand', 'hand-secret');
    for (const s of servers) expect((await call(s, '/Patient', auth)).status).toBe(200);
    const warm = Date.now();
    await sql`delete from "client" where id = 'by-hand'`;
    for (const s of servers) await answersWithin(s, '/Patient', auth, 401, warm);
  });

  test('a server whose listening connection was cut listens again and still hears the next change', async () => {
    await put('/Client/relisten', { resourceType: 'Client', secret: 'first', grant_types: ['basic'] });
    await put('/AccessPolicy/relisten-all', { resourceType: 'AccessPolicy', engine: 'allow', link: [{ resourceType: 'Client', id: 'relisten' }] });
    const listeners = () => sql`select pid from pg_stat_activity where datname = current_database() and query ilike 'listen %'`;
    const before = (await listeners()).length;
    expect(before).toBeGreaterThanOrEqual(3);
    await sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query ilike 'listen %'`;
    // each server reconnects and LISTENs again (postgres.js does it after the connection closes)
    const until = Date.now() + 20_000;
    while ((await listeners()).length < before) {
      if (Date.now() > until) throw new Error('the servers did not listen again within 20 s');
      await Bun.sleep(50);
    }
    const oldAuth = basic('relisten', 'first');
    for (const s of servers) expect((await call(s, '/Patient', oldAuth)).status).toBe(200);
    const warm = Date.now();
    await put('/Client/relisten', { resourceType: 'Client', secret: 'second', grant_types: ['basic'] }, c());
    for (const s of servers) await answersWithin(s, '/Patient', oldAuth, 401, warm);
  });
});

describe('policy changes reach every server', () => {
  test('a policy narrowed through A is enforced by B at once, and widened again through C', async () => {
    await put('/Client/analyst', { resourceType: 'Client', secret: 'analyst-secret', grant_types: ['basic'] });
    const policy = (uri: string) => ({
      resourceType: 'AccessPolicy', engine: 'matcho', link: [{ resourceType: 'Client', id: 'analyst' }],
      matcho: { uri, 'request-method': 'get' },
    });
    await put('/AccessPolicy/analyst-read', policy('/Patient'));
    const auth = basic('analyst', 'analyst-secret');
    expect((await call(b(), '/Patient', auth)).status).toBe(200);
    expect((await call(b(), '/Observation', auth)).status).toBe(403);

    let warm = Date.now();
    await put('/AccessPolicy/analyst-read', policy('/Observation'));
    await answersWithin(b(), '/Patient', auth, 403, warm);
    expect((await call(b(), '/Observation', auth)).status).toBe(200);

    expect((await call(a(), '/Patient', auth)).status).toBe(403);
    warm = Date.now();
    await put('/AccessPolicy/analyst-patients', policy('/Patient'), c());
    await answersWithin(b(), '/Patient', auth, 200, warm);
    await answersWithin(a(), '/Patient', auth, 200, warm);
  });
});

describe('credentials: abuse', () => {
  test('wrong secrets, unknown clients and malformed headers are 401 on every server, before and after changes', async () => {
    await put('/Client/guarded', { resourceType: 'Client', secret: 'right', grant_types: ['basic'] });
    await put('/AccessPolicy/guarded-all', { resourceType: 'AccessPolicy', engine: 'allow', link: [{ resourceType: 'Client', id: 'guarded' }] });
    const bad = [basic('guarded', 'wrong'), basic('nobody', 'right'), basic('root', 'not-root'), 'Basic !!!', 'Bearer abc'];
    for (const s of servers) {
      expect((await call(s, '/Patient', basic('guarded', 'right'))).status).toBe(200);
      for (const auth of bad) expect((await call(s, '/Patient', auth)).status).toBe(401);
    }
    // the right secret cached everywhere does not make a wrong one pass after a change either
    await put('/Client/guarded', { resourceType: 'Client', secret: 'right', grant_types: ['basic'] }, b());
    for (const s of servers) for (const auth of bad) expect((await call(s, '/Patient', auth)).status).toBe(401);
  });
});
