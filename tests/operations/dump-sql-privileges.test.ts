/**
 * POST /$dump-sql privileges (SPEC §6): the query runs as `fhirhose_sql` (storage/sql-reader.ts),
 * not as fhirhose's superuser role: no server files, no killing other sessions, no way back to the
 * superuser, no secrets; the resource tables stay readable.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { migrate } from '../../src/storage/migrations.ts';
import { inspectSqlReader } from '../../src/storage/sql-reader.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
let other: Sql;

beforeAll(async () => {
  server = await startTestServer();
  await server.sql.unsafe(`
    insert into patient (id, txid, status, resource) values ('p1', 1, 'created', '{"name": [{"family": "Ng"}]}');
    insert into patient_history (id, txid, status, resource) values ('p1', 1, 'created', '{"name": [{"family": "Ng"}]}');
    insert into observation (id, txid, status, resource) values ('o1', 2, 'created', '{"subject": {"reference": "Patient/p1"}}');
    insert into bulkimportstatus (id, txid, status, resource) values ('s1', 3, 'created', '{}');
    insert into bulkimport_secret (session_id, hash) values ('s1', 'secret-hash')`);
  other = connect(server.databaseUrl, { max: 1 });
});
afterAll(async () => {
  await other.end();
  await server.stop();
});

const dumpSql = (query: string) => server.request('/$dump-sql', { method: 'POST', json: { query } });

async function fingerprint(): Promise<string> {
  const [row] = await server.sql`select
    (select md5(string_agg(id || resource::text, ',' order by id)) from patient) as patients,
    (select md5(string_agg(id || coalesce(resource->>'secret', ''), ',' order by id)) from client) as clients,
    (select md5(string_agg(session_id || hash, ',' order by session_id)) from bulkimport_secret) as secrets,
    (select count(*)::int from _migrations) as migrations`;
  return JSON.stringify(row);
}

test('the query runs as fhirhose_sql, the server as its own role', async () => {
  expect(await (await dumpSql('select current_user, session_user')).text()).toBe('fhirhose_sql\tpostgres\n');
  const [row] = await server.sql`select current_user as u, (select rolsuper from pg_roles where rolname = current_user) as su`;
  expect(row).toEqual({ u: 'postgres', su: true }); // so the tests below exercise the real path
});

test('superuser functions, the role switch back and secret tables are 400 with PostgreSQL\'s message and change nothing', async () => {
  const [{ pid }] = (await other`select pg_backend_pid() as pid`) as unknown as [{ pid: number }];
  const before = await fingerprint();
  const attacks: [string, string][] = [
    [`select pg_read_file('/etc/passwd')`, 'permission denied for function pg_read_file'],
    [`select pg_ls_dir('.')`, 'permission denied for function pg_ls_dir'],
    [`select pg_terminate_backend(${pid})`, 'permission denied to terminate process'],
    [`select pg_cancel_backend(${pid})`, 'permission denied to cancel query'],
    [`select set_config('role', 'postgres', false), pg_read_file('/etc/passwd')`, 'permission denied for function set_config'],
    [`select set_config('session_authorization', 'postgres', false)`, 'permission denied for function set_config'],
    [`select lo_import('/etc/passwd')`, 'permission denied for function lo_import'],
    [`select pg_reload_conf()`, 'permission denied for function pg_reload_conf'],
    ['select * from client', 'permission denied for table client'],
    ['select * from client_history', 'permission denied for table client_history'],
    ['select * from bulkimport_secret', 'permission denied for table bulkimport_secret'],
    ['select * from bulkimport_input', 'permission denied for table bulkimport_input'],
    ['select * from _migrations', 'permission denied for table _migrations'],
    [`select p.id from patient p join client c on true`, 'permission denied for table client'],
  ];
  for (const [query, message] of attacks) {
    const res = await dumpSql(query);
    const body = await res.json();
    expect({ query, status: res.status, message: body.message }).toEqual({ query, status: 400, message: `The query failed: ${message}` });
  }
  expect(await fingerprint()).toBe(before);
  const [alive] = await other`select pg_backend_pid() as pid`;
  expect(Number(alive!.pid)).toBe(Number(pid));
});

test('resource tables, their history and joins across them still read', async () => {
  expect(await (await dumpSql('select id, resource from patient')).text()).toBe('p1\t"{""name"": [{""family"": ""Ng""}]}"\n');
  const history = await dumpSql('select * from patient_history');
  expect(history.status).toBe(200);
  expect((await history.text()).split('\t')[0]).toBe('p1');
  const join = await dumpSql(`select p.id, o.id from patient p join observation o on o.resource#>>'{subject,reference}' = 'Patient/' || p.id`);
  expect(await join.text()).toBe('p1\to1\n');
  expect(await (await dumpSql('select id from bulkimportstatus')).text()).toBe('s1\n');
});

test('a table created later is not readable; a resource table a later migration creates is, after migrate', async () => {
  // a $load staging table, created long after migrations ran
  await server.sql.unsafe('create unlogged table _fhirhose_load_staging_probe (line int)');
  expect((await dumpSql('select * from _fhirhose_load_staging_probe')).status).toBe(400);
  // a resource table (re)created without grants, as a migration adding a type would create it
  await server.sql.unsafe('drop table encounter; create table encounter (like patient including all)');
  expect((await dumpSql('select * from encounter')).status).toBe(400);
  expect(await migrate(server.sql)).toEqual([]);
  expect((await dumpSql('select * from encounter')).status).toBe(200);
  expect((await dumpSql('select * from _fhirhose_load_staging_probe')).status).toBe(400);
});

test('a database role that cannot SET ROLE fhirhose_sql gets a warning and no role', async () => {
  const role = `t_plain_${Math.random().toString(36).slice(2, 8)}`;
  await server.sql.unsafe(`create role ${role} login password 'x'`);
  const url = new URL(server.databaseUrl);
  url.username = role;
  url.password = 'x';
  const plain = connect(url.toString(), { max: 1 });
  try {
    const reader = await inspectSqlReader(plain);
    expect(reader.role).toBeUndefined();
    expect(reader.warning).toContain('full privileges');
  } finally {
    await plain.end();
    await server.sql.unsafe(`drop role ${role}`);
  }
  expect(await inspectSqlReader(server.sql)).toEqual({ role: 'fhirhose_sql', warning: undefined });
});
