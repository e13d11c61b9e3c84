/** SPEC §2 / issue 2: migrations are versioned and idempotent. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { migrate } from '../../src/storage/migrations.ts';
import { freshDatabase, withDatabase } from '../helpers/database.ts';

let admin: Sql;
let sql: Sql;
let name: string;
beforeAll(async () => {
  // an empty database, not the migrated template
  admin = connect(process.env.FHIRHOSE_TEST_ADMIN_URL!, { max: 1 });
  name = `m_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  await admin.unsafe(`create database ${name}`);
  sql = connect(withDatabase(process.env.FHIRHOSE_TEST_ADMIN_URL!, name), { max: 4 });
});
// The databases are left for the run's PostgreSQL to be deleted with (like every test clone):
// DROP DATABASE waits for a checkpoint, which took 20 s after the import tests had written a lot.
afterAll(async () => {
  await sql.end();
  await admin.end();
});

async function schemaShape(db: Sql) {
  const [row] = await db`select
    (select count(*) from information_schema.tables where table_schema = 'public')::int as tables,
    (select count(*) from information_schema.columns where table_schema = 'public')::int as columns,
    (select count(*) from pg_indexes where schemaname = 'public')::int as indexes`;
  return row;
}

describe('migrations', () => {
  test('the first run applies every migration in order and records it', async () => {
    const applied = await migrate(sql);
    expect(applied.length).toBeGreaterThan(0);
    expect(applied).toEqual([...applied].sort((a, b) => a - b));
    const rows = await sql`select version from _migrations order by version`;
    expect(rows.map((r) => Number(r.version))).toEqual(applied);
  });

  test('a second run applies nothing and leaves the schema and data as they were', async () => {
    await sql`insert into patient (id, txid, status, resource) values ('keep', 1, 'created', '{}')`;
    const before = await schemaShape(sql);
    expect(await migrate(sql)).toEqual([]);
    expect(await schemaShape(sql)).toEqual(before);
    const [row] = await sql`select count(*)::int as n from patient where id = 'keep'`;
    expect(row!.n).toBe(1);
  });

  test('concurrent starts on one database migrate once (advisory lock)', async () => {
    const other = `${name}_c`;
    await admin.unsafe(`create database ${other}`);
    const pools = [0, 1, 2].map(() => connect(withDatabase(process.env.FHIRHOSE_TEST_ADMIN_URL!, other), { max: 1 }));
    try {
      const results = await Promise.all(pools.map((p) => migrate(p)));
      const total = results.flat();
      expect(new Set(total).size).toBe(total.length);
      expect(results.filter((r) => r.length > 0)).toHaveLength(1);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  test('the template used by tests is fully migrated', async () => {
    const clone = connect(await freshDatabase(), { max: 1 });
    try {
      expect(await migrate(clone)).toEqual([]);
    } finally {
      await clone.end();
    }
  });
});
