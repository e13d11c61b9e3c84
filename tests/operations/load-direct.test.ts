/**
 * `$load` straight into the resource tables (operations/load-direct.ts): taken when the ids are
 * new, left for staging + merge at the first id already there, and the same final state and
 * answer as the staging path (forced here with `temp_table`) in every case.
 */
import { afterAll, beforeAll, beforeEach, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { ndjson, serveSources, type SourceServer } from '../helpers/sources.ts';
import { stagedAfterDirect } from '../../src/operations/load-direct.ts';
import { createStaging } from '../../src/storage/staging.ts';
import { takeVersion } from '../../src/storage/versions.ts';

let server: TestServer;
let sources: SourceServer;
beforeAll(async () => {
  server = await startTestServer();
  sources = serveSources();
  // every table a load creates is logged, so a test can tell whether it staged
  await server.sql.unsafe(`
    create table if not exists ddl_log (name text);
    create or replace function log_create() returns event_trigger language plpgsql as $$
      begin insert into ddl_log select object_identity from pg_event_trigger_ddl_commands() where command_tag = 'CREATE TABLE'; end $$;
    drop event trigger if exists log_create;
    create event trigger log_create on ddl_command_end execute function log_create();`);
});
afterAll(async () => {
  await server.sql.unsafe('drop event trigger if exists log_create');
  sources.stop();
  await server.stop();
});
beforeEach(async () => { await server.sql`truncate patient, patient_history, organization, organization_history, ddl_log`; });

type Line = Record<string, unknown>;
const patient = (id: string, family: string): Line => ({ resourceType: 'Patient', id, name: [{ family }] });
const org = (id: string): Line => ({ resourceType: 'Organization', id, name: `Org ${id}` });

async function load(lines: Line[], extra: Record<string, unknown> = {}) {
  const url = sources.put(`/direct-${crypto.randomUUID()}.ndjson`, ndjson(lines));
  const res = await server.request('/$load', { method: 'POST', json: { source: url, ...extra } });
  return { status: res.status, body: await res.json() as Record<string, unknown> };
}

async function state() {
  const rows = [];
  for (const table of ['patient', 'organization', 'patient_history', 'organization_history']) {
    for (const r of await server.sql.unsafe(`select id, status, resource, cts = ts as same from ${table} order by id`)) rows.push([table, r.id, r.status, r.same, r.resource]);
  }
  const [{ txids }] = await server.sql`select count(distinct txid)::int as txids from (select txid from patient union all select txid from organization) v` as any;
  return { rows, txids };
}

const staged = async () => (await server.sql`select count(*)::int as n from ddl_log where name like '%_fhirhose_stage_%'`)[0]!.n as number;

/** Loads `lines` both ways into the same starting tables; returns both answers and states. */
async function bothWays(lines: Line[], before: Line[] = [], extra: Record<string, unknown> = {}) {
  const out = [];
  for (const tempTable of [undefined, '_direct_compare']) {
    await server.sql`truncate patient, patient_history, organization, organization_history, ddl_log`;
    if (before.length > 0) expect((await load(before)).status).toBe(200);
    await server.sql`truncate ddl_log`;
    const answer = await load(lines, { ...extra, ...(tempTable ? { temp_table: tempTable } : {}) });
    out.push({ answer, staged: await staged(), ...(await state()) });
  }
  return { direct: out[0]!, staging: out[1]! };
}

test('new ids of several types go straight into their tables, with no staging table, one txid, as staging would write them', async () => {
  const lines = [patient('a', 'A'), patient('b', 'B'), org('o1'), org('o2'), patient('c', 'C')];
  const { direct, staging } = await bothWays(lines);
  expect(direct.answer).toEqual({ status: 200, body: { Patient: 3, Organization: 2 } });
  expect(direct.staged).toBe(0);
  expect(direct.txids).toBe(1);
  expect(direct.rows).toEqual(staging.rows);
  expect(direct.rows.filter((r) => r[2] !== 'created')).toEqual([]);
});

test('an id repeated in the same run: the segment is staged, the last line wins and the duplicate is counted', async () => {
  const lines = [org('o1'), patient('a', 'first'), patient('b', 'B'), patient('a', 'last')];
  const { direct, staging } = await bothWays(lines, [], { update: true });
  expect(direct.answer).toEqual({ status: 200, body: { Organization: 1, Patient: 2, duplicates: 1 } });
  expect(direct.answer).toEqual(staging.answer);
  expect(direct.staged).toBe(1);
  expect(direct.txids).toBe(1);
  expect(direct.rows).toEqual(staging.rows);
  expect(direct.rows.find((r) => r[0] === 'patient' && r[1] === 'a')![4]).toEqual({ name: [{ family: 'last' }] });
});

test('an id written straight, then repeated in a later run of its type: it moves back to staging, created once, no history', async () => {
  const lines = [patient('a', 'first'), patient('b', 'B'), org('o1'), patient('c', 'C'), patient('a', 'last'), org('o2')];
  const { direct, staging } = await bothWays(lines, [], { update: true });
  expect(direct.answer).toEqual({ status: 200, body: { Patient: 3, Organization: 2, duplicates: 1 } });
  expect(direct.answer).toEqual(staging.answer);
  expect(direct.staged).toBe(1);
  expect(direct.txids).toBe(1);
  expect(direct.rows).toEqual(staging.rows);
  expect(direct.rows.filter((r) => String(r[0]).endsWith('_history'))).toEqual([]);
});

test('ids the tables already hold: updated, with history, as the staging path does', async () => {
  const before = [patient('a', 'old'), org('o1')];
  const lines = [org('o2'), patient('new', 'N'), patient('a', 'new'), org('o1')];
  const { direct, staging } = await bothWays(lines, before, { update: true });
  expect(direct.answer).toEqual({ status: 200, body: { Organization: 2, Patient: 2 } });
  expect(direct.staged).toBe(1);
  expect(direct.rows).toEqual(staging.rows);
  expect(direct.rows.filter((r) => r[2] === 'updated').map((r) => r[1])).toEqual(['a', 'o1']);
  expect(direct.rows.filter((r) => String(r[0]).endsWith('_history')).map((r) => r[1])).toEqual(['a', 'o1']);
});

test('a reload: ids among the next few of a type are looked up first, and no direct COPY is tried for them', async () => {
  // every COPY into patient that starts bumps a sequence, which a rollback does not undo
  await server.sql.unsafe(`
    create sequence if not exists patient_copies;
    create or replace function count_copy() returns trigger language plpgsql as $$
      begin if current_query() ilike 'copy%' then perform nextval('patient_copies'); end if; return null; end $$;
    drop trigger if exists count_copy on patient;
    create trigger count_copy before insert on patient for each statement execute function count_copy();`);
  const copies = async () => Number((await server.sql`select case when is_called then last_value else 0 end as n from patient_copies`)[0]!.n);
  try {
    const lines = Array.from({ length: 20 }, (_, i) => patient(`r${i}`, `F${i}`));
    const start = await copies();
    expect((await load(lines)).body).toEqual({ Patient: 20 });
    expect(await copies()).toBe(start + 1);
    // the same lines again: the first ids are there, so they are staged without a COPY into patient
    await server.sql`truncate ddl_log`;
    const again = await load(lines.map((l) => ({ ...l, name: [{ family: 'again' }] })), { update: true });
    expect(again.body).toEqual({ Patient: 20 });
    expect(await copies()).toBe(start + 1);
    expect(await staged()).toBe(1);
    const [row] = await server.sql`select count(*)::int as n from patient_history where id like 'r%'`;
    expect(row!.n).toBe(20);
    // one id held past the looked-up ones: the COPY is tried, meets it and is rolled back; nothing lost or doubled
    await server.sql`truncate patient, patient_history`;
    await server.sql`insert into patient (id, txid, status, resource) values ('r15', 1, 'created', '{}')`;
    expect((await load(lines, { update: true })).body).toEqual({ Patient: 20 });
    expect(await copies()).toBe(start + 2);
    const rows = await server.sql`select id, resource->'name'->0->>'family' as family from patient where id like 'r%' order by id`;
    expect(rows.length).toBe(20);
    expect(rows.find((r) => r.id === 'r15')!.family).toBe('F15');
  } finally {
    await server.sql.unsafe('drop trigger if exists count_copy on patient');
  }
});

test('after 60 runs of types the rest is staged; the result is the same', async () => {
  const lines: Line[] = [];
  for (let i = 0; i < 70; i++) lines.push(i % 2 ? org(`o${i}`) : patient(`p${i}`, `F${i}`));
  const { direct, staging } = await bothWays(lines);
  expect(direct.answer).toEqual({ status: 200, body: { Patient: 35, Organization: 35 } });
  expect(direct.staged).toBe(1);
  expect(direct.txids).toBe(1);
  expect(direct.rows).toEqual(staging.rows);
});

test('rows written straight that are staged again move back in one pass over the staging table, however stale the statistics', async () => {
  // The resource table's statistics know only an earlier load's txid, so the planner takes the
  // rows of this one for a single row: without an index on the staging table it scanned all of it
  // once per row written straight (1,000,000 lines of the Synthea mix: over 6 minutes).
  await server.sql`insert into patient (id, txid, status, resource) select 'old-' || i, 1, 'created', '{}' from generate_series(1, 3000) i`;
  await server.sql`analyze patient`;
  const result = await server.sql.begin(async (tx) => {
    const version = await takeVersion(tx);
    await tx`insert into patient (id, txid, status, resource) select 'new-' || i, ${version.txid}::bigint, 'created', '{"n":1}' from generate_series(1, 2000) i`;
    const table = await createStaging(tx);
    // 20,000 staged lines, 10 of them ids written straight above
    await tx.unsafe(`insert into ${table} (line, type, id, resource) select i, 'Patient', case when i <= 10 then 'new-' || i else 'staged-' || i end, '{"n":2}' from generate_series(1, 20000) i`);
    const kept = await stagedAfterDirect(tx, table, version, { Patient: 2000 });
    const [scan] = await tx.unsafe(`select pg_stat_get_xact_tuples_returned('${table}'::regclass)::int as seq_read`);
    const [moved] = await tx.unsafe(`select count(*)::int as n, min(id) as first from ${table} where line = 0`);
    const [left] = await tx`select count(*)::int as n from patient where id like 'new-%'`;
    // rolled back: nothing of this stays
    throw Object.assign(new Error('rollback'), { result: { kept, seqRead: scan!.seq_read as number, moved: { n: moved!.n, first: moved!.first }, left: left!.n } });
  }).catch((err) => { if (err?.result) return err.result; throw err; });
  expect({ kept: result.kept, moved: result.moved, left: result.left }).toEqual({ kept: { Patient: 1990 }, moved: { n: 10, first: 'new-1' }, left: 1990 });
  expect(result.seqRead).toBeLessThanOrEqual(20_010); // at most one pass; 2,000 passes read 40,000,000
});

test('bad lines are reported the same way; a source of bad lines only writes nothing; an empty source is refused', async () => {
  const lines = [patient('a', 'A'), { resourceType: 'Patient' }, patient('b', 'B')];
  const { direct, staging } = await bothWays(lines);
  expect(direct.answer.status).toBe(200);
  expect(direct.answer).toEqual(staging.answer);
  expect(direct.answer.body.errorCount).toBe(1);
  expect(direct.staged).toBe(0);
  expect(direct.rows).toEqual(staging.rows);
  await server.sql`truncate patient, patient_history`;
  const onlyBad = await load([{ resourceType: 'Patient' }]);
  expect([onlyBad.status, onlyBad.body.errorCount]).toEqual([200, 1]);
  const empty = await load([]);
  expect(empty.status).toBe(422);
  expect((await state()).rows).toEqual([]);
});
