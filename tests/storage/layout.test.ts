/** SPEC §2: the tables users' SQL relies on, checked in information_schema / pg_catalog. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { ALL_TYPES, RESOURCE_TYPES } from '../../src/fhir/types.ts';
import { freshDatabase } from '../helpers/database.ts';

let sql: Sql;
beforeAll(async () => { sql = connect(await freshDatabase(), { max: 2 }); });
afterAll(async () => { await sql.end(); });

const EXPECTED_COLUMNS = [
  { column_name: 'id', data_type: 'text', is_nullable: 'NO' },
  { column_name: 'txid', data_type: 'bigint', is_nullable: 'NO' },
  { column_name: 'cts', data_type: 'timestamp with time zone', is_nullable: 'NO' },
  { column_name: 'ts', data_type: 'timestamp with time zone', is_nullable: 'NO' },
  { column_name: 'resource_type', data_type: 'text', is_nullable: 'NO' },
  { column_name: 'status', data_type: 'USER-DEFINED', is_nullable: 'NO' },
  { column_name: 'resource', data_type: 'jsonb', is_nullable: 'NO' },
];

async function columnsOf(table: string) {
  return sql`select column_name, data_type, is_nullable, column_default, udt_name
             from information_schema.columns where table_schema = 'public' and table_name = ${table}
             order by ordinal_position`;
}

async function primaryKeyOf(table: string): Promise<string[]> {
  const rows = await sql`select a.attname from pg_index i
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
    where i.indrelid = ${`public."${table}"`}::regclass and i.indisprimary
    order by array_position(i.indkey, a.attnum)`;
  return rows.map((r) => r.attname as string);
}

describe('storage layout', () => {
  test('every FHIR R4 type and Client, AccessPolicy, BulkImportStatus has a table and a _history table', async () => {
    expect(RESOURCE_TYPES.length).toBe(146); // the R4 schema's discriminator mapping, see tests/fhir/types.test.ts
    const rows = await sql`select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'`;
    const tables = new Set(rows.map((r) => r.table_name as string));
    for (const type of ALL_TYPES) {
      expect(tables.has(type.toLowerCase())).toBe(true);
      expect(tables.has(`${type.toLowerCase()}_history`)).toBe(true);
    }
    for (const own of ['client', 'accesspolicy', 'bulkimportstatus', 'group', 'careplan']) expect(tables.has(own)).toBe(true);
  });

  test('each resource table has exactly the Aidbox columns with their types and defaults', async () => {
    for (const type of ALL_TYPES) {
      const table = type.toLowerCase();
      for (const t of [table, `${table}_history`]) {
        const cols = await columnsOf(t);
        expect(cols.map(({ column_name, data_type, is_nullable }) => ({ column_name, data_type, is_nullable }))).toEqual(EXPECTED_COLUMNS);
        const byName = Object.fromEntries(cols.map((c) => [c.column_name, c]));
        expect(byName.status!.udt_name).toBe('resource_status');
        expect(byName.cts!.column_default).toBe('now()');
        expect(byName.ts!.column_default).toBe('now()');
        expect(byName.resource_type!.column_default).toBe(`'${type}'::text`);
      }
    }
  });

  test('primary keys are (id) on the table and (id, txid) on its history', async () => {
    for (const type of ['Patient', 'Group', 'Client', 'BulkImportStatus']) {
      expect(await primaryKeyOf(type.toLowerCase())).toEqual(['id']);
      expect(await primaryKeyOf(`${type.toLowerCase()}_history`)).toEqual(['id', 'txid']);
    }
  });

  test('resource_status is the enum created | updated | deleted | recreated', async () => {
    const rows = await sql`select e.enumlabel from pg_enum e join pg_type t on t.oid = e.enumtypid
                           where t.typname = 'resource_status' order by e.enumsortorder`;
    expect(rows.map((r) => r.enumlabel)).toEqual(['created', 'updated', 'deleted', 'recreated']);
  });

  test('one sequence transaction_id_seq numbers versions', async () => {
    const rows = await sql`select sequence_name, data_type from information_schema.sequences where sequence_schema = 'public'`;
    expect(rows.map((r) => r.sequence_name)).toContain('transaction_id_seq');
    const [a] = await sql`select nextval('transaction_id_seq') as v`;
    const [b] = await sql`select nextval('transaction_id_seq') as v`;
    expect(BigInt(b!.v)).toBeGreaterThan(BigInt(a!.v));
  });

  test('the "group" table works only quoted, as SPEC §2 says identifiers are', async () => {
    await sql.unsafe(`insert into "group" (id, txid, status, resource) values ('g1', 1, 'created', '{"type": "person", "actual": true}')`);
    const [row] = await sql.unsafe(`select resource_type, resource->>'type' as kind from "group" where id = 'g1'`);
    expect({ ...row }).toEqual({ resource_type: 'Group', kind: 'person' });
    await expect(sql.unsafe('select count(*) from group')).rejects.toThrow();
  });
});
