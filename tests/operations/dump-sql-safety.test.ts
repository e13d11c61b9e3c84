/**
 * POST /$dump-sql security (SPEC §6): read-only, one statement, a statement timeout, nothing left
 * behind on the pooled connection, and only clients whose policy allows it.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import { basic, startTestServer, type TestServer } from '../helpers/server.ts';
import { running } from './dump-helpers.ts';
import { within } from '../helpers/wait.ts';

let server: TestServer;
const TIMEOUT_MS = 400;

beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_SQL_TIMEOUT_MS: String(TIMEOUT_MS) });
  await server.sql.unsafe(`INSERT INTO patient (id, txid, status, resource) SELECT g.id, g.id, 'created', '{"name": [{"family": "John"}]}' FROM generate_series(1, 50) AS g (id)`);
});
// stop() may wait up to its 5 s for a connection whose query was cancelled or killed mid-way
afterAll(async () => { await server.stop(); }, 15_000);

const dumpSql = (query: string, auth?: string) =>
  server.request('/$dump-sql', { method: 'POST', json: { query }, ...(auth ? { auth } : {}) });

async function fingerprint(): Promise<string> {
  const [row] = await server.sql`select count(*)::int as n, max(txid)::text as txid, md5(string_agg(resource::text, '' order by id)) as sum,
    (select last_value::text from transaction_id_seq) as seq from patient`;
  return JSON.stringify(row);
}

test('writes, DDL, smuggled statements, writing CTEs and sleeps past the timeout are all 400 and change nothing', async () => {
  const before = await fingerprint();
  const attacks = [
    'delete from patient',
    'drop table patient',
    'select 1; drop table patient',
    'select 1) to stdout; commit; drop table patient; --',
    'with gone as (delete from patient returning *) select * from gone',
    'update patient set resource = \'{}\' returning id',
    `select pg_sleep(${(TIMEOUT_MS * 3) / 1000})`,
    "select nextval('transaction_id_seq')",
    'select * from patient for update',
    "copy (select 1) to program 'touch /tmp/fhirhose-dump-sql-pwned'",
    'commit; drop table patient',
    'set transaction read write',
  ];
  for (const query of attacks) {
    const res = await dumpSql(query);
    expect({ query, status: res.status }).toEqual({ query, status: 400 });
    const body = await res.json();
    expect(body.resourceType).toBe('OperationOutcome');
    expect(body.message).toStartWith('The query failed: ');
  }
  expect(await fingerprint()).toBe(before);
  expect(fs.existsSync('/tmp/fhirhose-dump-sql-pwned')).toBe(false);
  const timeout = await (await dumpSql('select pg_sleep(5)')).json();
  expect(timeout.message).toContain('statement timeout');
});

test('session state set by a query does not outlive it on the pooled connection', async () => {
  for (let i = 0; i < 15; i++) { // more than the pool: every connection gets one
    // session advisory locks are refused outright (SPEC §10, dump-sql-limits.test.ts)
    const res = await dumpSql(`select pg_advisory_lock(7041991)`);
    expect(res.status).toBe(400);
    await res.text();
    // set_config is revoked from PUBLIC (it could switch the role back: dump-sql-privileges.test.ts)
    const denied = await dumpSql(`select set_config('statement_timeout', '1', false), set_config('search_path', 'nowhere', false)`);
    expect(denied.status).toBe(400);
  }
  // SET LOCAL ROLE fhirhose_sql ended with the transaction on every pooled connection
  const roles = await Promise.all(Array.from({ length: 15 }, () => server.sql`select current_setting('role') as role`));
  expect(new Set(roles.map(([r]) => r!.role))).toEqual(new Set(['none']));
  const [lock] = await server.sql`select pg_try_advisory_lock(7041991) as free`;
  expect(lock!.free).toBe(true);
  await server.sql`select pg_advisory_unlock(7041991)`;
  for (let i = 0; i < 15; i++) {
    const res = await server.request('/Patient/7');
    expect(res.status).toBe(200); // would fail under a 1 ms timeout or with search_path = nowhere
  }
});

test('a statement timeout after the first rows aborts the stream instead of ending it', async () => {
  // the first FETCH (100 rows) is quick; the row after it sleeps past the timeout
  const res = await dumpSql(`select g, case when g = 150 then pg_sleep(${(TIMEOUT_MS * 3) / 1000}) end from generate_series(1, 200) g`);
  expect(res.status).toBe(200);
  await expect(res.text()).rejects.toThrow();
  expect((await server.request('/Patient/7')).status).toBe(200);
});

test('a client that disconnects ends the transaction and frees its connection', async () => {
  // 300 MB of rows. generate_series materialises its numbers before the first FETCH: 40 ms for
  // 300,000 on an idle machine; 2,000,000 took 150 ms and could pass the 400 ms timeout on a busy one
  const res = await dumpSql(`select g, repeat('x', 1000) from generate_series(1, 300000) g`);
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  await reader.read();
  await reader.cancel();
  // left alone, the cursor's transaction would stay idle in transaction for ever: any bound tells them apart
  await within(10_000, async () => (await running(server.sql, '%fhirhose_dump_sql%')).length === 0
    && (await server.sql`select 1 from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'`).length === 0,
  'the cursor closed and its transaction ended');
});

test('a client whose policy allows $dump but not $dump-sql gets 403', async () => {
  const setup = await server.request('/', {
    method: 'PUT',
    json: [
      { resourceType: 'Client', id: 'c', secret: 'c-secret', grant_types: ['basic'] },
      { resourceType: 'AccessPolicy', id: 'p', engine: 'matcho', matcho: { uri: '#/\\$dump$', 'request-method': 'get' }, link: [{ resourceType: 'Client', id: 'c' }] },
    ],
  });
  expect(setup.status).toBe(200);
  const auth = basic('c', 'c-secret');
  const allowed = await server.request('/Patient/$dump', { auth, headers: { 'accept-encoding': 'identity' } });
  expect(allowed.status).toBe(200);
  expect((await allowed.text()).trimEnd().split('\n').length).toBe(50);
  const denied = await dumpSql('select 1', auth);
  expect(denied.status).toBe(403);
  expect((await denied.json()).message).toContain('$dump-sql');
  expect(await (await dumpSql('select 1')).text()).toBe('1\n'); // root may
});
