/**
 * SPEC §10 for `POST /$dump-sql`: a row over FHIRHOSE_SQL_MAX_VALUE_BYTES stops the query (before
 * the body: 413; after it: the body is aborted) without the server buffering it; every format
 * keeps one record per line whatever the values hold; functions that write or outlive the query
 * are refused. An ordinary client is served throughout.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { spawnServer, client, type Child } from '../helpers/child-server.ts';
import { rssOf, sampleRss } from '../helpers/rss.ts';

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_SQL_MAX_VALUE_BYTES: String(1024 * 1024), FHIRHOSE_BULK_CONCURRENCY: '2' });
  await server.sql`insert into patient (id, txid, status, resource) values ('p1', 1, 'created', '{"name": [{"family": "Ng"}]}')`;
});
afterAll(async () => { await server.stop(); }, 15_000);

const dumpSql = (body: Record<string, unknown>) => server.request('/$dump-sql', { method: 'POST', json: body });

describe('value limit', () => {
  test('a first row over the limit is 413 naming FHIRHOSE_SQL_MAX_VALUE_BYTES; a later one aborts the body; no connection is lost', async () => {
    const first = await dumpSql({ query: "select repeat('x', 5000000) as big" });
    expect(first.status).toBe(413);
    const outcome = (await first.json()) as { message: string };
    expect(outcome.message).toContain('FHIRHOSE_SQL_MAX_VALUE_BYTES');
    expect(outcome.message).toContain('over the limit of 1048576 bytes');

    const later = await dumpSql({ query: "select g, case when g = 3000 then repeat('y', 3000000) else 'small' end from generate_series(1, 4000) g" });
    expect(later.status).toBe(200);
    await expect(later.text()).rejects.toThrow();

    // a value just under the limit goes out whole
    const under = await dumpSql({ query: "select repeat('z', 1000000) as v", format: 'ndjson' });
    expect(under.status).toBe(200);
    expect(JSON.parse(await under.text()).v).toHaveLength(1_000_000);
    // the $dump-sql pool (2 connections here) lost none: many more queries than it has run
    for (let i = 0; i < 6; i++) {
      const res = await dumpSql({ query: "select repeat('x', 2000000)" });
      expect(res.status).toBe(413);
      await res.text();
      expect(await (await dumpSql({ query: 'select id from patient' })).text()).toBe('p1\n');
    }
  }, 60_000);
});

describe('one record per line', () => {
  const JSON_DOC = `'{"a":\n  1,\r\n "b": "x\\ny"}'::json`;

  test('ndjson: a json (not jsonb) value with line breaks stays on its row, the same value', async () => {
    const res = await dumpSql({ query: `select 'r1' as id, ${JSON_DOC} as doc, E'two\\nlines' as t`, format: 'ndjson' });
    const text = await res.text();
    expect(text.endsWith('\n')).toBe(true);
    const lines = text.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toEqual({ id: 'r1', doc: { a: 1, b: 'x\ny' }, t: 'two\nlines' });
  });

  test('elastic-bulk: action line and document line, nothing more', async () => {
    const text = await (await dumpSql({ query: `select 'r1' as id, ${JSON_DOC} as doc`, format: 'elastic-bulk', index: 'i' })).text();
    const lines = text.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0]!)).toEqual({ index: { _index: 'i', _id: 'r1' } });
    expect(JSON.parse(lines[1]!)).toEqual({ id: 'r1', doc: { a: 1, b: 'x\ny' } });
  });

  test('sql: one INSERT per line that replays to the same values, line breaks and backslashes included', async () => {
    const text = await (await dumpSql({ query: `select E'a\\nb\\r\\nc\\\\d''e' as t, ${JSON_DOC} as doc`, format: 'sql', table: 't_lines' })).text();
    const lines = text.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    await server.sql.unsafe('create table t_lines (t text, doc json)');
    await server.sql.unsafe(lines[0]!);
    const [row] = await server.sql`select t, doc::text as doc from t_lines`;
    expect(row!.t).toBe('a\nb\r\nc\\d\'e');
    expect(JSON.parse(row!.doc as string)).toEqual({ a: 1, b: 'x\ny' });
  });
});

describe('writing functions', () => {
  const refused = [
    "select pg_logical_emit_message(true, 'fhirhose', 'x')",
    "select pg_logical_emit_message(false, 'fhirhose', 'x')",
    "select pg_logical_emit_message(false, 'fhirhose', 'x'::bytea)",
    'select txid_current()',
    'select pg_current_xact_id()',
    'select pg_advisory_lock(42)',
    'select pg_advisory_lock(4, 2)',
    'select pg_advisory_lock_shared(42)',
    'select pg_try_advisory_lock(42)',
    'select pg_try_advisory_lock_shared(42)',
    'select pg_advisory_xact_lock(42)',
    'select pg_try_advisory_xact_lock(42)',
    "select nextval('transaction_id_seq')",
    "select setval('transaction_id_seq', 1)",
    'select lo_create(0)',
  ];
  for (const query of refused) {
    test(`${query} is 400 and changes nothing; reads go on`, async () => {
      const [before] = await server.sql`select (select last_value::text from transaction_id_seq) as seq,
        (select count(*)::int from pg_locks where locktype = 'advisory') as locks`;
      const res = await dumpSql({ query });
      expect(res.status).toBe(400);
      const outcome = (await res.json()) as { message: string };
      expect(outcome.message).toMatch(/permission denied|read-only transaction/);
      const [after] = await server.sql`select (select last_value::text from transaction_id_seq) as seq,
        (select count(*)::int from pg_locks where locktype = 'advisory') as locks`;
      expect(after).toEqual(before!);
      expect((await server.request('/Patient/p1')).status).toBe(200);
    });
  }

  test('what a reader needs still works: txid_current_if_assigned, snapshots, unlock', async () => {
    const res = await dumpSql({ query: 'select txid_current_if_assigned() as x, pg_current_snapshot() is not null as s, pg_advisory_unlock_all()', format: 'ndjson' });
    expect(res.status).toBe(200);
    expect(JSON.parse(await res.text())).toMatchObject({ x: null, s: true });
  });
});

describe('memory', () => {
  let child: Child;
  beforeAll(async () => {
    child = await spawnServer(await freshDatabase(), await freePort(), { FHIRHOSE_LOG: 'quiet' });
  }, 60_000);
  afterAll(async () => { child.proc.kill('SIGTERM'); await child.proc.exited; }, 30_000);

  test("select repeat('x', 1000000000) is refused without the server going past 300 MB, while a read is served", async () => {
    const api = client(child);
    const put = await api.request('/Patient/m1', { method: 'PUT', json: { resourceType: 'Patient', id: 'm1' } });
    expect(put.status).toBe(201);
    const sampler = sampleRss(child.proc.pid);
    const big = api.request('/$dump-sql', { method: 'POST', json: { query: "select repeat('x', 1000000000)" } });
    const read = await api.request('/Patient/m1');
    expect(read.status).toBe(200);
    const res = await big;
    expect(res.status).toBe(413);
    expect(((await res.json()) as { message: string }).message).toContain('FHIRHOSE_SQL_MAX_VALUE_BYTES');
    const peak = sampler.stop();
    expect(peak).toBeLessThan(300);
    expect(rssOf(child.proc.pid).peak).toBeLessThan(300);
    expect((await api.request('/Patient/m1')).status).toBe(200);
  }, 120_000);
});
