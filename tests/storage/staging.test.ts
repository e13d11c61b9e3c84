import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { copyIntoStaging, createStaging, mergeStaging, type StagingRow } from '../../src/storage/staging.ts';
import { freshDatabase } from '../helpers/database.ts';

let sql: Sql;
beforeAll(async () => { sql = connect(await freshDatabase(), { max: 4 }); });
afterAll(async () => { await sql.end(); });

const row = (line: number, id: string, extra: Record<string, unknown> = {}, type = 'Patient'): StagingRow =>
  ({ line, type, id, json: JSON.stringify({ name: [{ family: `F${line}` }], ...extra }) });

async function* batches(rows: StagingRow[], size: number): AsyncIterable<StagingRow[]> {
  for (let i = 0; i < rows.length; i += size) yield rows.slice(i, i + size);
}

test('COPY streams rows into an unlogged staging table and the merge upserts them per type', async () => {
  const result = await sql.begin(async (tx) => {
    const table = await createStaging(tx);
    const copied = await copyIntoStaging(tx, table, batches([row(1, 'a'), row(2, 'b'), row(3, 'o1', {}, 'Organization')], 2));
    expect(copied).toBe(3);
    return mergeStaging(tx, table, { update: false, method: 'copy' });
  });
  expect(result).toEqual({ counts: { Organization: 1, Patient: 2 }, duplicates: 0, conflicted: [] });
  const rows = await sql`select id, status, resource_type, resource from patient order by id`;
  expect(rows.map((r) => [r.id, r.status, r.resource_type, r.resource.name[0].family])).toEqual([
    ['a', 'created', 'Patient', 'F1'], ['b', 'created', 'Patient', 'F2'],
  ]);
});

test('the last line of a duplicated id wins, with copy and with insert, and duplicates are counted', async () => {
  for (const method of ['copy', 'insert'] as const) {
    await sql`truncate patient, patient_history`;
    const rows = [row(1, 'x'), row(2, 'y'), row(3, 'x'), row(4, 'x'), row(5, 'z')];
    const result = await sql.begin(async (tx) => {
      const table = await createStaging(tx);
      await copyIntoStaging(tx, table, rows);
      return mergeStaging(tx, table, { update: false, method, batchRows: 2 });
    });
    // copy: the plain INSERT into the empty table meets the repeated id, and the upsert runs
    expect(result).toEqual({ counts: { Patient: 3 }, duplicates: 2, conflicted: method === 'copy' ? ['Patient'] : [] });
    const stored = await sql`select id, resource->'name'->0->>'family' as f from patient order by id`;
    expect(stored.map((r) => `${r.id}:${r.f}`)).toEqual(['x:F4', 'y:F2', 'z:F5']);
  }
});

test('a merge of 10,000 rows or more of several types reads each type through an index on type; types and ids stay apart', async () => {
  await sql`truncate patient, patient_history, organization, organization_history`;
  // the same id in two types, a duplicate within one, types interleaved as a flattened Bundle gives them
  const rows: StagingRow[] = [row(1, 'same'), row(2, 'same', {}, 'Organization'), row(3, 'p2'), row(4, 'same', { x: 1 }), row(5, 'o2', {}, 'Organization')];
  for (let i = 0; i < 10_000; i++) rows.push(row(6 + i, `bulk-${i}`, {}, i % 2 ? 'Patient' : 'Organization'));
  const { result, indexed } = await sql.begin(async (tx) => {
    const table = await createStaging(tx);
    await copyIntoStaging(tx, table, batches(rows, 1000));
    const result = await mergeStaging(tx, table, { update: false, method: 'copy' });
    const indexed = await tx`select indexdef from pg_indexes where tablename = ${table}`;
    return { result, indexed: indexed.map((r) => String(r.indexdef)) };
  });
  expect(result).toEqual({ counts: { Organization: 5002, Patient: 5002 }, duplicates: 1, conflicted: ['Patient'] });
  expect(indexed.some((d) => /\(type\)$/.test(d))).toBe(true);
  expect((await sql`select id, resource->>'x' as x from patient where id not like 'bulk-%' order by id`).map((r) => `${r.id}:${r.x}`)).toEqual(['p2:null', 'same:1']);
  expect((await sql`select id from organization where id not like 'bulk-%' order by id`).map((r) => r.id)).toEqual(['o2', 'same']);
  expect((await sql`select count(*)::int as n from patient where status = 'created'`)[0]!.n).toBe(5002);
});

test('a small merge of several types, or a merge of one type, builds no index', async () => {
  for (const rows of [[row(1, 'solo')], [row(1, 'p'), row(2, 'o', {}, 'Organization')]]) {
    const indexed = await sql.begin(async (tx) => {
      const table = await createStaging(tx);
      await copyIntoStaging(tx, table, rows);
      await mergeStaging(tx, table, { update: false, method: 'copy' });
      return tx`select indexdef from pg_indexes where tablename = ${table}`;
    });
    expect(indexed.length).toBe(0);
  }
});

test('into an empty table: an id another transaction commits meanwhile is updated, as the upsert would, not refused', async () => {
  await sql`truncate patient, patient_history`;
  const other = await sql.reserve();
  try {
    await other`begin`;
    await other`insert into patient (id, txid, status, resource) values ('race', 1, 'created', '{"name": [{"family": "other"}]}')`;
    // the merge sees an empty table (the other row is not committed), inserts, and waits on the key
    const merging = sql.begin(async (tx) => {
      const table = await createStaging(tx);
      await copyIntoStaging(tx, table, [row(1, 'race'), row(2, 'fresh')]);
      return mergeStaging(tx, table, { update: true, method: 'copy' });
    });
    const deadline = Date.now() + 10_000;
    while ((await sql`select count(*)::int as n from pg_locks where not granted`)[0]!.n === 0) {
      if (Date.now() > deadline) throw new Error('the merge never waited for the other transaction');
      await Bun.sleep(20);
    }
    await other`commit`;
    expect(await merging).toEqual({ counts: { Patient: 2 }, duplicates: 0, conflicted: ['Patient'] });
  } finally {
    other.release();
  }
  const stored = await sql`select id, status, resource->'name'->0->>'family' as f from patient order by id`;
  expect(stored.map((r) => `${r.id}:${r.status}:${r.f}`)).toEqual(['fresh:created:F2', 'race:updated:F1']);
  const history = await sql`select id, resource->'name'->0->>'family' as f from patient_history`;
  expect(history.map((r) => `${r.id}:${r.f}`)).toEqual(['race:other']);
});

test('insertFirst: a plain INSERT that meets an existing id at its last row ends as the upsert; false skips it', async () => {
  await sql`truncate patient, patient_history`;
  await sql`insert into patient (id, txid, status, resource) values ('old', 1, 'created', '{"name": [{"family": "before"}]}')`;
  const merge = (rows: StagingRow[], insertFirst: boolean) => sql.begin(async (tx) => {
    const table = await createStaging(tx);
    await copyIntoStaging(tx, table, rows);
    return mergeStaging(tx, table, { update: true, method: 'copy', insertFirst: () => insertFirst });
  });
  expect(await merge([row(1, 'new1'), row(2, 'new2'), row(3, 'old')], true)).toEqual({ counts: { Patient: 3 }, duplicates: 0, conflicted: ['Patient'] });
  const stored = await sql`select id, status, resource->'name'->0->>'family' as f from patient order by id`;
  expect(stored.map((r) => `${r.id}:${r.status}:${r.f}`)).toEqual(['new1:created:F1', 'new2:created:F2', 'old:updated:F3']);
  expect((await sql`select resource->'name'->0->>'family' as f from patient_history`).map((r) => r.f)).toEqual(['before']);
  // new ids only: the INSERT goes through although the table is not empty
  expect(await merge([row(1, 'new3')], true)).toEqual({ counts: { Patient: 1 }, duplicates: 0, conflicted: [] });
  // false: the upsert straight away, even into an empty table
  await sql`truncate patient, patient_history`;
  expect(await merge([row(1, 'a'), row(2, 'a')], false)).toEqual({ counts: { Patient: 1 }, duplicates: 1, conflicted: [] });
  expect((await sql`select resource->'name'->0->>'family' as f from patient`).map((r) => r.f)).toEqual(['F2']);
});

test('update: true moves overwritten rows to history; update: false does not', async () => {
  await sql`truncate patient, patient_history`;
  const load = (update: boolean, family: string) => sql.begin(async (tx) => {
    const table = await createStaging(tx);
    await copyIntoStaging(tx, table, [{ line: 1, type: 'Patient', id: 'h', json: JSON.stringify({ name: [{ family }] }) }]);
    return mergeStaging(tx, table, { update, method: 'copy' });
  });
  await load(false, 'one');
  await load(false, 'two');
  expect((await sql`select count(*)::int as n from patient_history`)[0]!.n).toBe(0);
  await load(true, 'three');
  const history = await sql`select resource->'name'->0->>'family' as f from patient_history where id = 'h'`;
  expect(history.map((r) => r.f)).toEqual(['two']);
  const [current] = await sql`select status, resource->'name'->0->>'family' as f from patient where id = 'h'`;
  expect(current).toEqual({ status: 'updated', f: 'three' });
});

test('a failing source fails the COPY and leaves nothing behind', async () => {
  await sql`truncate patient`;
  async function* broken(): AsyncIterable<StagingRow[]> {
    yield [row(1, 'p1')];
    throw new Error('source broke');
  }
  const attempt = sql.begin(async (tx) => {
    const table = await createStaging(tx);
    await copyIntoStaging(tx, table, broken());
    return mergeStaging(tx, table, { update: false, method: 'copy' });
  });
  expect(attempt).rejects.toThrow('source broke');
  await attempt.catch(() => {});
  expect((await sql`select count(*)::int as n from patient`)[0]!.n).toBe(0);
  // The connection is usable afterwards.
  expect((await sql`select 1 as one`)[0]!.one).toBe(1);
});

test('a named staging table is kept, replaced by the next load, and never replaces a real table', async () => {
  await sql.begin(async (tx) => {
    const table = await createStaging(tx, { name: '_kept_stage' });
    await copyIntoStaging(tx, table, [row(1, 'k')]);
  });
  await sql.begin(async (tx) => {
    const table = await createStaging(tx, { name: '_kept_stage' });
    await copyIntoStaging(tx, table, [row(1, 'k2'), row(2, 'k3')]);
  });
  expect((await sql`select count(*)::int as n from _kept_stage`)[0]!.n).toBe(2);
  expect(sql.begin((tx) => createStaging(tx, { name: 'patient' }))).rejects.toThrow('already exists');
  expect(sql.begin((tx) => createStaging(tx, { name: 'x; drop table patient' }))).rejects.toThrow('plain SQL identifier');
});

test('rows larger than a COPY chunk and non-ASCII text arrive byte for byte', async () => {
  await sql`truncate patient`;
  const big = 'ü€😀'.repeat(300_000) + 'x'.repeat(1_500_000);
  const rows: StagingRow[] = [
    row(1, 'small-before'),
    { line: 2, type: 'Patient', id: 'big', json: JSON.stringify({ text: { div: big } }) },
    { line: 3, type: 'Patient', id: 'accents', json: JSON.stringify({ name: [{ family: 'Müller-Łukasz', given: ['Zoë', '李'] }] }) },
    row(4, 'small-after'),
  ];
  await sql.begin(async (tx) => {
    const table = await createStaging(tx);
    expect(await copyIntoStaging(tx, table, rows)).toBe(4);
    await mergeStaging(tx, table, { update: false, method: 'copy' });
  });
  const [bigRow] = await sql`select resource->'text'->>'div' as div from patient where id = 'big'`;
  expect(bigRow!.div === big).toBe(true);
  const [accents] = await sql`select resource from patient where id = 'accents'`;
  expect(accents!.resource).toEqual({ name: [{ family: 'Müller-Łukasz', given: ['Zoë', '李'] }] });
  expect((await sql`select count(*)::int as n from patient`)[0]!.n).toBe(4);
});

test('refs arrive as text[] (empty, several, non-ASCII) or NULL, and line numbers and ids of many chunks stay in order', async () => {
  const refs: (string[] | undefined)[] = [undefined, [], ['Patient/a'], ['Organization/o-1', 'Practitioner/ü-2', 'Patient/x.y']];
  const rows: StagingRow[] = [];
  for (let i = 0; i < 6_000; i++) rows.push({ ...row(i + 1, `r-${i}`, { pad: 'p'.repeat(i % 700) }), refs: refs[i % refs.length] });
  const stored = await sql.begin(async (tx) => {
    const table = await createStaging(tx);
    expect(await copyIntoStaging(tx, table, batches(rows, 777))).toBe(rows.length);
    return tx.unsafe<{ line: number; id: string; refs: string[] | null; pad: string }[]>(
      `select line, id, refs, resource->>'pad' as pad from "${table}" order by line`);
  });
  expect(stored.length).toBe(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const got = stored[i]!;
    expect([got.line, got.id, got.pad.length]).toEqual([i + 1, `r-${i}`, i % 700]);
    expect(got.refs).toEqual(refs[i % refs.length] ?? null);
  }
});
