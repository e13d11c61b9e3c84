/**
 * SPEC §11: resource-table writes stay in the statement shapes a Citus-distributed table accepts.
 * Every statement that create, update, delete and the $load/$import merge (both methods, with
 * and without `update`) send is recorded and checked: a statement that writes a resource or
 * history table calls no nextval/setval/now/to_char, and no statement writes two such tables.
 * The same writes must still give each id growing versions, with the sequence lifted past
 * hand-inserted txids.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { freshDatabase } from '../helpers/database.ts';
import { deleteResource, insertResource, writeResource } from '../../src/storage/resources.ts';
import { copyIntoStaging, createStaging, dropStaging, mergeStaging } from '../../src/storage/staging.ts';
import { takeVersion } from '../../src/storage/versions.ts';
import { ALL_TYPES, historyTableOf, tableOf } from '../../src/fhir/types.ts';

let sql: Sql;
/** Every statement sent on `sql` while `recording` is set (postgres.js `debug`: the final text). */
let recording: string[] | undefined;
beforeAll(async () => { sql = connect(await freshDatabase(), { max: 3, onQuery: (text) => recording?.push(text) }); });
afterAll(async () => { await sql.end(); });

async function recorded<T>(fn: () => Promise<T>): Promise<{ result: T; log: string[] }> {
  const log: string[] = [];
  recording = log;
  try {
    return { result: await fn(), log };
  } finally {
    recording = undefined;
  }
}

const RESOURCE_TABLES = new Set(ALL_TYPES.flatMap((t) => [tableOf(t), historyTableOf(t)]));
const WRITE = /\b(insert\s+into|update|delete\s+from)\s+"([^"]+)"/gi;

/** What is wrong with these statements, for Citus; empty when nothing. */
function citusProblems(statements: string[]): string[] {
  const problems: string[] = [];
  for (const text of statements) {
    const written = new Set([...text.matchAll(WRITE)].map((m) => m[2]!).filter((t) => RESOURCE_TABLES.has(t)));
    if (written.size === 0) continue;
    const oneLine = text.replace(/\s+/g, ' ').trim();
    for (const fn of ['nextval(', 'setval(', 'now()', 'to_char(', 'clock_timestamp(', 'random(']) {
      if (oneLine.toLowerCase().includes(fn)) problems.push(`${fn.replace(/\(\)?$/, '')}() in a write of ${[...written].join(', ')}: ${oneLine}`);
    }
    if (written.size > 1) problems.push(`one statement writes ${[...written].join(' and ')}: ${oneLine}`);
  }
  return problems;
}

const stored = (family: string) => ({ name: [{ family }] });

describe('resource-table writes in Citus-compatible shapes', () => {
  test('create, update, delete and recreate: no volatile function in any write, one table per statement, versions grow', async () => {
    const { result: versions, log } = await recorded(() => sql.begin(async (tx) => {
      const created = await insertResource(tx, 'Patient', 'c1', stored('A'));
      const updated = await writeResource(tx, 'Patient', 'c1', stored('B'));
      await deleteResource(tx, 'Patient', 'c1');
      const recreated = await writeResource(tx, 'Patient', 'c1', stored('C'));
      return [created!.txid, updated.row.txid, recreated.row.txid].map(String);
    }));
    expect(log.length).toBeGreaterThan(4);
    expect(citusProblems(log)).toEqual([]);
    expect(versions.map(BigInt)).toEqual([...versions.map(BigInt)].sort((a, b) => (a < b ? -1 : 1)));
    const history = await sql`select txid::text, status from patient_history where id = 'c1' order by txid`;
    expect(history.map((r) => r.status)).toEqual(['created', 'updated', 'deleted']);
    const [current] = await sql`select status, resource from patient where id = 'c1'`;
    expect(current).toEqual({ status: 'recreated', resource: stored('C') });
  });

  test('a hand-inserted txid above the sequence: the next version is above it, and the sequence is lifted past it', async () => {
    const [{ last }] = (await sql`select last_value::text as last from transaction_id_seq`) as unknown as [{ last: string }];
    const high = BigInt(last) + 1000n;
    await sql`insert into patient (id, txid, status, resource) values ('hand', ${high.toString()}, 'created', '{}')`;
    const { result: row, log } = await recorded(() => sql.begin((tx) => writeResource(tx, 'Patient', 'hand', stored('X'))));
    expect(BigInt(row.row.txid)).toBe(high + 1n);
    expect(citusProblems(log)).toEqual([]);
    const next = await sql.begin((tx) => takeVersion(tx));
    expect(BigInt(next.txid)).toBeGreaterThan(high + 1n);
  });

  for (const method of ['copy', 'insert'] as const) {
    test(`the ${method} merge, creating and then updating with history: parameters only, one table per statement`, async () => {
      const ids = Array.from({ length: 30 }, (_, i) => `${method}-${i}`);
      const log: string[] = [];
      for (const [round, family] of [[0, 'first'], [1, 'second']] as const) {
        log.push(...(await recorded(() => sql.begin(async (tx) => {
          const table = await createStaging(tx);
          await copyIntoStaging(tx, table, ids.map((id, i) => ({ line: i + 1, type: 'Observation', id, json: JSON.stringify({ status: family }) })));
          // a duplicate id: the last line wins (the copy method retries with DISTINCT ON)
          await copyIntoStaging(tx, table, [{ line: 99, type: 'Observation', id: ids[0]!, json: JSON.stringify({ status: `${family}-last` }) }]);
          const merged = await mergeStaging(tx, table, { update: round === 1, method, batchRows: 7 });
          expect(merged.counts).toEqual({ Observation: ids.length });
          await dropStaging(tx, table);
        }))).log);
      }
      expect(citusProblems(log)).toEqual([]);
      expect(log.some((s) => /insert into "observation_history"/i.test(s))).toBe(true);
      const rows = await sql`select id, txid::text, status, resource->>'status' as s from observation where id like ${method + '-%'} order by id`;
      expect(rows.length).toBe(ids.length);
      expect(new Set(rows.map((r) => r.status))).toEqual(new Set(['updated']));
      expect(rows.find((r) => r.id === ids[0])!.s).toBe('second-last');
      const history = await sql`select count(*)::int as n from observation_history where id like ${method + '-%'}`;
      expect(history[0]!.n).toBe(ids.length);
    });
  }

  test('the guard itself finds the shapes it is for', () => {
    expect(citusProblems([`insert into "patient" (id, txid) select id, nextval('transaction_id_seq') from s`])).toHaveLength(1);
    expect(citusProblems([`insert into "patient" as t values ($1) on conflict (id) do update set ts = now()`])).toHaveLength(1);
    expect(citusProblems([`update "patient" set ts = $1 returning to_char(ts, 'YYYY')`])).toHaveLength(1);
    expect(citusProblems([`with old as (delete from "patient" where id = $1 returning *) insert into "patient_history" select * from old`])).toHaveLength(1);
    expect(citusProblems([`select nextval('transaction_id_seq')`, `insert into "staging_x" select now()`])).toEqual([]);
  });
});
