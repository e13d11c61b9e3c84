/** The binary COPY decoder and field readers behind $dump, fed with real PostgreSQL bytes. */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { copyOut } from '../../src/storage/copy-out.ts';
import { copyBinaryDecoder, readTimestamptzInstant } from '../../src/storage/copy-binary.ts';
import { writeInt8Decimal } from '../../src/operations/dump-bytes.ts';
import { LAST_UPDATED } from '../../src/storage/resources.ts';
import { freshDatabase } from '../helpers/database.ts';

let sql: Sql;
beforeAll(async () => { sql = connect(await freshDatabase(), { max: 3 }); });
afterAll(async () => { await sql.end(); });

async function copyBytes(statement: string): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of await copyOut(sql, statement)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

type Tuple = (string | null)[];

function decodeAll(chunks: Uint8Array[], fieldCount: number): Tuple[] {
  const tuples: Tuple[] = [];
  const decoder = copyBinaryDecoder(fieldCount, (buf, f) => {
    const t: Tuple = [];
    for (let i = 0; i < fieldCount; i++) t.push(f[2 * i + 1]! < 0 ? null : buf.toString('hex', f[2 * i]!, f[2 * i]! + f[2 * i + 1]!));
    tuples.push(t);
  });
  for (const chunk of chunks) decoder.push(chunk);
  decoder.end();
  return tuples;
}

test('tuples decode the same whatever the chunk boundaries, NULLs and empty fields included', async () => {
  const bytes = await copyBytes(`copy (select g::text, case when g % 3 = 0 then null else repeat('x', g) end, ''::text
    from generate_series(0, 40) g) to stdout (format binary)`);
  const whole = decodeAll([bytes], 3);
  expect(whole.length).toBe(41);
  expect(whole[3]![1]).toBeNull();
  expect(whole[4]![1]).toBe(Buffer.from('xxxx').toString('hex'));
  expect(whole[0]![2]).toBe('');
  const oneByOne = Array.from(bytes, (b) => Uint8Array.of(b));
  expect(decodeAll(oneByOne, 3)).toEqual(whole);
  for (let cut = 1; cut < bytes.length; cut += 7) {
    expect(decodeAll([bytes.subarray(0, cut), bytes.subarray(cut)], 3)).toEqual(whole);
  }
});

test('a stream cut before its trailer is an error, not a short result', async () => {
  const bytes = await copyBytes(`copy (select 'a'::text) to stdout (format binary)`);
  expect(() => decodeAll([bytes.subarray(0, bytes.length - 2)], 1)).toThrow(/truncated/);
  expect(() => decodeAll([bytes.subarray(0, bytes.length - 5)], 1)).toThrow(/truncated/);
  expect(() => decodeAll([bytes], 2)).toThrow(/expected 2/);
});

test('timestamps read from binary match LAST_UPDATED to the microsecond, years 1 to 9999', async () => {
  await sql.unsafe(`create table ts_sample as select row_number() over () as n, ts from (
    values ('0001-01-01 00:00:00+00'::timestamptz), ('1969-12-31 23:59:59.999999+00'), ('1970-01-01 00:00:00+00'),
      ('1999-12-31 23:59:59.999999+00'), ('2000-01-01 00:00:00+00'), ('2000-01-01 00:00:00.000001+00'),
      ('2285-06-01 00:00:00.5+00'), ('2286-01-01 00:00:00.000001+00'), ('9999-12-31 23:59:59.999999+00')
    union all select timestamptz '0500-01-01' + random() * interval '9000 years' from generate_series(1, 2000)) t(ts)`);
  const rows = await sql.unsafe(`select ${LAST_UPDATED} as text from ts_sample order by n`);
  const bytes = await copyBytes('copy (select ts from ts_sample order by n) to stdout (format binary)');
  const decoded: string[] = [];
  const decoder = copyBinaryDecoder(1, (buf, f) => { decoded.push(readTimestamptzInstant(buf, f[0]!)!); });
  decoder.push(bytes);
  decoder.end();
  expect(decoded.length).toBe(2009);
  expect(decoded).toEqual(rows.map((r) => r.text as string));
});

test('infinite timestamps have no instant', async () => {
  const bytes = await copyBytes(`copy (values ('infinity'::timestamptz), ('-infinity')) to stdout (format binary)`);
  const decoded: (string | undefined)[] = [];
  const decoder = copyBinaryDecoder(1, (buf, f) => { decoded.push(readTimestamptzInstant(buf, f[0]!)); });
  decoder.push(bytes);
  expect(decoded).toEqual([undefined, undefined]);
});

test('int8 digits are exact across the 2^53 boundary and for negatives', () => {
  for (const n of [0n, 7n, 10n, 4294967295n, 4294967296n, 9007199254740991n, 9007199254740993n, 9223372036854775807n, -1n, -9223372036854775808n]) {
    const field = Buffer.alloc(8);
    field.writeBigInt64BE(n);
    const out = Buffer.alloc(32);
    const end = writeInt8Decimal(out, 3, field, 0);
    expect(out.toString('latin1', 3, end)).toBe(n.toString());
  }
});

test('back-to-back COPYs leave every pooled connection usable (postgres.js paused-socket bug)', async () => {
  const pool = connect(process.env.FHIRHOSE_TEST_ADMIN_URL!, { max: 2 });
  try {
    for (let i = 0; i < 30; i++) {
      const stream = await copyOut(pool, `copy (select repeat('x', 1000 + ${i}) from generate_series(1, 3000)) to stdout`);
      const reader = stream.getReader();
      // a reader slower than PostgreSQL, so postgres.js's buffer fills and it pauses the socket
      for (let r = await reader.read(); !r.done; r = await reader.read()) await Bun.sleep(1);
      // a hung connection never answers: any bound tells it from a loaded machine's slow answer
      const answer = await Promise.race([pool`select ${i}::int as i`.then((rows) => Number(rows[0]!.i)), Bun.sleep(20_000).then(() => 'hung')]);
      expect(answer).toBe(i);
    }
  } finally {
    await pool.end({ timeout: 1 });
  }
}, 120_000);
