/**
 * The direct COPY into resource tables (storage/resource-copy.ts): rows as the merge writes new
 * ones, and 23505 with nothing written when an id is already there, whoever put it there.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, pgCode, type Sql } from '../../src/storage/db.ts';
import { copyIntoResources, rowsByType, typesHolding } from '../../src/storage/resource-copy.ts';
import { createStaging, copyIntoStaging, mergeStaging, type StagingRow } from '../../src/storage/staging.ts';
import { instantText, takeVersion } from '../../src/storage/versions.ts';
import { freshDatabase } from '../helpers/database.ts';

let sql: Sql;
beforeAll(async () => { sql = connect(await freshDatabase(), { max: 4 }); });
afterAll(async () => { await sql.end(); });

const row = (line: number, id: string, type = 'Patient'): StagingRow =>
  ({ line, type, id, json: JSON.stringify({ name: [{ family: `F${line}`, given: ['Zoë', '李'] }] }) });

const stored = (table: string) => sql.unsafe(
  `select id, txid::text as txid, ${instantText('cts')} as cts, ${instantText('ts')} as ts, resource_type, status, resource from ${table} order by id`);

test('rows land as the merge writes new ones: created, the version\'s txid, cts = ts = its instant to the microsecond', async () => {
  await sql`truncate patient, patient_history`;
  const rows = [row(1, 'a'), row(2, 'b'), row(3, 'c')];
  const direct = await sql.begin(async (tx) => {
    const version = await takeVersion(tx);
    expect(await copyIntoResources(tx, 'Patient', version, rows)).toBe(3);
    return { version, rows: await tx.unsafe(`select id, txid::text as txid, ${instantText('cts')} as cts, ${instantText('ts')} as ts, resource_type, status, resource from patient order by id`) };
  });
  expect(direct.rows.map((r) => [r.id, r.txid, r.cts, r.ts, r.resource_type, r.status])).toEqual(
    ['a', 'b', 'c'].map((id) => [id, direct.version.txid, direct.version.ts, direct.version.ts, 'Patient', 'created']));
  expect(direct.rows[0]!.resource).toEqual(JSON.parse(rows[0]!.json));
  // the same rows through staging and the merge: the same columns but the version
  await sql`truncate patient, patient_history`;
  const merged = await sql.begin(async (tx) => {
    const table = await createStaging(tx);
    await copyIntoStaging(tx, table, rows);
    await mergeStaging(tx, table, { update: true, method: 'copy' });
    return tx.unsafe(`select id, resource_type, status, resource, cts = ts as same from patient order by id`);
  });
  expect(merged.map((r) => [r.id, r.resource_type, r.status, r.same, r.resource])).toEqual(
    direct.rows.map((r) => [r.id, r.resource_type, r.status, true, r.resource]));
});

async function refused(rows: StagingRow[]): Promise<string | undefined> {
  return sql.begin(async (tx) => {
    const version = await takeVersion(tx);
    try {
      await tx.savepoint((sp) => copyIntoResources(sp, 'Patient', version, rows));
      return undefined;
    } catch (err) {
      return pgCode(err);
    }
  });
}

test('an id the table holds, or one repeated in the rows, fails the COPY with 23505 and writes nothing', async () => {
  await sql`truncate patient, patient_history`;
  await sql`insert into patient (id, txid, status, resource) values ('old', 1, 'created', '{}')`;
  expect(await refused([row(1, 'new-1'), row(2, 'old'), row(3, 'new-2')])).toBe('23505');
  expect(await refused([row(1, 'r-1'), row(2, 'r-2'), row(3, 'r-1')])).toBe('23505');
  expect((await sql`select id from patient`).map((r) => r.id)).toEqual(['old']);
});

test('an id another transaction inserts meanwhile: the COPY waits for it and fails once it commits', async () => {
  await sql`truncate patient, patient_history`;
  const other = await sql.reserve();
  try {
    await other`begin`;
    await other`insert into patient (id, txid, status, resource) values ('race', 1, 'created', '{}')`;
    const copy = refused([row(1, 'fresh'), row(2, 'race')]);
    // the COPY waits on the other transaction's uncommitted id
    for (let i = 0; i < 100; i++) {
      const [waiting] = await sql`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and query like 'copy%'`;
      if (waiting!.n > 0) break;
      await Bun.sleep(20);
    }
    await other`commit`;
    expect(await copy).toBe('23505');
  } finally {
    other.release();
  }
  expect((await sql`select id from patient order by id`).map((r) => r.id)).toEqual(['race']);
});

test('a row of another type, or a failing source, fails the COPY', async () => {
  await sql`truncate patient, patient_history`;
  await expect(sql.begin(async (tx) => copyIntoResources(tx, 'Patient', await takeVersion(tx), [row(1, 'x', 'Organization')]))).rejects.toThrow(/Organization row in the COPY of Patient/);
  async function* broken(): AsyncIterable<StagingRow[]> {
    yield [row(1, 'p-1')];
    throw new Error('source broke');
  }
  await expect(sql.begin(async (tx) => copyIntoResources(tx, 'Patient', await takeVersion(tx), broken()))).rejects.toThrow(/source broke/);
  expect((await sql`select count(*)::int as n from patient`)[0]!.n).toBe(0);
});

test('rowsByType keeps each type\'s rows in order', () => {
  const rows = [row(1, 'a'), row(2, 'o', 'Organization'), row(3, 'b'), row(4, 'p', 'Organization')];
  expect([...rowsByType(rows)].map(([t, list]) => [t, list.map((r) => r.line)])).toEqual([['Patient', [1, 3]], ['Organization', [2, 4]]]);
});

test('typesHolding finds the types whose table holds one of the first or last ids; the 23505 names the table', async () => {
  await sql`truncate patient, patient_history, observation, observation_history`;
  await sql`insert into patient (id, txid, status, resource) values ('old', 1, 'created', '{}')`;
  const many = (type: string, at: number) => Array.from({ length: 20 }, (_, i) => row(i, i === at ? 'old' : `${type}-${i}`, type));
  const holding = (byType: [string, StagingRow[]][]) => sql.begin((tx) => typesHolding(tx, byType));
  expect(await holding([['Patient', many('Patient', 0)], ['Observation', many('Observation', -1)]])).toEqual(['Patient']);
  expect(await holding([['Observation', many('Observation', -1)], ['Patient', many('Patient', 19)]])).toEqual(['Patient']);
  expect(await holding([['Patient', [row(1, 'old')]]])).toEqual(['Patient']);
  expect(await holding([])).toEqual([]);
  // an id between the samples is missed: the COPY still refuses it, naming the table
  expect(await holding([['Patient', many('Patient', 10)]])).toEqual([]);
  const err = await sql.begin(async (tx) => {
    const version = await takeVersion(tx);
    return copyIntoResources(tx, 'Patient', version, many('Patient', 10)).then(() => undefined, (e: unknown) => e);
  });
  expect([pgCode(err), (err as { table_name?: string }).table_name]).toEqual(['23505', 'patient']);
  // an Observation id equal to the Patient's is no hit: ids are per type
  expect(await holding([['Observation', [row(1, 'old', 'Observation')]]])).toEqual([]);
});
