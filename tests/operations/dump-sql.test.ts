/** POST /$dump-sql (SPEC §6): the four formats round-trip the values PostgreSQL holds. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import fs from 'node:fs';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { parseCsv } from './dump-helpers.ts';

let server: TestServer;

// Every character CSV and SQL literals must survive, NULL next to the empty string, and types
// whose JSON form differs from their text form.
const SHAPE = `id text, n int, big bigint, f float8, num numeric, b bool, j jsonb, s text, ts timestamptz, tags text[], bin bytea`;
const ROWS = `
  ('plain', 1, 9007199254740993, 1.5, 12345678901234567890.000001, true, '{"a": [1, "x"]}', 'hello', '2024-02-29 12:00:00.000001+00', '{a,b}', '\\x00ff'),
  ('tab', -2, 0, 'NaN', 0, false, '"str"', E'a\\tb', '1999-12-31 23:59:59+00', '{}', ''),
  ('comma', 0, -1, '-Infinity', -0.5, null, 'null', 'a,b "quoted" ''single''', null, '{"with space","x,y"}', null),
  ('lines', null, null, 1e100, null, true, '[]', E'line1\\nline2\\r\\nline3', '2024-01-01 00:00:00+00', null, 'bytes'),
  ('empty', 3, 3, 0, 3, false, '{}', '', '2024-01-01 00:00:00+00', '{""}', '\\x'),
  ('null', null, null, null, null, null, null, null, null, null, null),
  ('unicode', 4, 4, 2.25, 4, true, '{"k": "é 日本 \\u0001"}', 'é 日本 😀 \\ backslash E''\\n''', '2024-01-01 00:00:00+00', '{"\\\\"}', '\\x5c')`;

beforeAll(async () => {
  server = await startTestServer();
  // $dump-sql reads as fhirhose_sql, which may read resource tables only (dump-sql-privileges.test.ts)
  await server.sql.unsafe(`create table t (${SHAPE}); insert into t values ${ROWS}; grant select on t to fhirhose_sql`);
});
afterAll(async () => { await server.stop(); });

async function dumpSql(body: unknown, query = ''): Promise<Response> {
  return server.request(`/$dump-sql${query}`, { method: 'POST', json: body });
}

/** The table as PostgreSQL's text output (format's %s: each type's output function), ordered by id. */
async function asText(table: string): Promise<(string | null)[][]> {
  const cols = SHAPE.split(',').map((c) => c.trim().split(' ')[0]!);
  const text = cols.map((c) => `case when ${c} is null then null else format('%s', ${c}) end`);
  const rows = await server.sql.unsafe(`select ${text.join(', ')} from ${table} order by id`).values();
  return rows as (string | null)[][];
}

describe('csv', () => {
  test('default: tab-separated, no header, text/tab-separated-values, values read back exactly', async () => {
    const res = await dumpSql({ query: 'select * from t order by id' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/tab-separated-values');
    const rows = parseCsv(await res.text(), '\t');
    expect(rows).toEqual(await asText('t'));
  });

  test('delimiter "," with header: RFC 4180 text/csv that PostgreSQL COPY … CSV HEADER loads back identically', async () => {
    const res = await dumpSql({ query: 'select * from t order by id', delimiter: ',', header: true });
    expect(res.headers.get('content-type')).toBe('text/csv');
    const text = await res.text();
    const [header, ...rows] = parseCsv(text, ',');
    expect(header).toEqual(['id', 'n', 'big', 'f', 'num', 'b', 'j', 's', 'ts', 'tags', 'bin']);
    expect(rows).toEqual(await asText('t'));
    await server.sql.unsafe(`create table t_csv (${SHAPE})`);
    const copy = await server.sql`copy t_csv from stdin (format csv, header true)`.writable();
    await new Promise<void>((resolve, reject) => copy.end(text, (err?: Error | null) => (err ? reject(err) : resolve())));
    expect(await asText('t_csv')).toEqual(await asText('t'));
  });

  test('another one-character delimiter is quoted around too', async () => {
    const res = await dumpSql({ query: `select 'a|b' as x, 'c' as y`, delimiter: '|' });
    expect(await res.text()).toBe('"a|b"|c\n');
  });
});

describe('ndjson and elastic-bulk', () => {
  test('ndjson: one object per row keyed by column, numbers/booleans/json keep their JSON type', async () => {
    const res = await dumpSql({ query: 'select * from t order by id', format: 'ndjson' });
    expect(res.headers.get('content-type')).toBe('application/ndjson');
    const rows = (await res.text()).trimEnd().split('\n').map((l) => JSON.parse(l));
    const byId = Object.fromEntries(rows.map((r) => [r.id, r]));
    expect(rows.length).toBe(7);
    expect(byId.plain).toMatchObject({ n: 1, f: 1.5, b: true, j: { a: [1, 'x'] }, s: 'hello', ts: '2024-02-29 12:00:00.000001+00', tags: '{a,b}', bin: '\\x00ff' });
    expect(typeof byId.plain.big).toBe('number'); // JSON.parse rounds it; the text keeps every digit:
    expect((await (await dumpSql({ query: "select big from t where id = 'plain'", format: 'ndjson' })).text())).toBe('{"big":9007199254740993}\n');
    expect(byId.tab).toMatchObject({ f: 'NaN', j: 'str', s: 'a\tb' });
    expect(byId.comma.j).toBeNull(); // jsonb null
    expect(byId.null).toEqual({ id: 'null', n: null, big: null, f: null, num: null, b: null, j: null, s: null, ts: null, tags: null, bin: null });
    expect(byId.unicode.s).toBe('é 日本 😀 \\ backslash E\'\\n\'');
  });

  test('ndjson: repeated column names stay apart', async () => {
    const res = await dumpSql({ query: 'select 1, 2, 3 as x, 4 as x', format: 'ndjson' });
    expect(JSON.parse(await res.text())).toEqual({ '?column?': 1, '?column?_2': 2, x: 3, x_2: 4 });
  });

  test('elastic-bulk: an index action with _index and _id before each document', async () => {
    const res = await dumpSql({ query: 'select id, n, s from t order by id', format: 'elastic-bulk', index: 'patients' });
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    const lines = (await res.text()).trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(lines.length).toBe(14);
    expect(lines[0]).toEqual({ index: { _index: 'patients', _id: 'comma' } });
    expect(lines[1]).toEqual({ id: 'comma', n: 0, s: 'a,b "quoted" \'single\'' });
    const noId = await (await dumpSql({ query: 'select 1 as n', format: 'elastic-bulk' })).text();
    expect(noId).toBe('{"index":{}}\n{"n":1}\n');
  });
});

describe('sql', () => {
  test('INSERT statements that psql replays into a table of the same shape, value for value', async () => {
    const res = await dumpSql({ query: 'select * from t order by id', format: 'sql', table: 't_replay' });
    expect(res.headers.get('content-type')).toBe('application/sql');
    const text = await res.text();
    expect(text.split('\n')[0]).toStartWith('INSERT INTO "t_replay" ("id", "n", "big", "f", "num", "b", "j", "s", "ts", "tags", "bin") VALUES (');
    await server.sql.unsafe(`create table t_replay (${SHAPE})`);
    if (fs.existsSync('/usr/bin/psql')) {
      const psql = Bun.spawn(['/usr/bin/psql', server.databaseUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1'], { stdin: new Blob([text]), stderr: 'pipe' });
      expect(await psql.exited).toBe(0);
    } else {
      await server.sql.unsafe(text); // no psql here: the simple protocol runs the statements the same way
    }
    expect(await asText('t_replay')).toEqual(await asText('t'));
  });

  test('a schema-qualified table is quoted part by part', async () => {
    const text = await (await dumpSql({ query: 'select 1 as n', format: 'sql', table: 'public.Copy' })).text();
    expect(text).toBe('INSERT INTO "public"."Copy" ("n") VALUES (1);\n');
  });
});

describe('requests', () => {
  test('a YAML body works, and ?_format= overrides the body format', async () => {
    const res = await server.request('/$dump-sql?_format=ndjson', {
      method: 'POST',
      headers: { 'content-type': 'text/yaml' },
      body: 'query: select id from t order by id limit 2\nformat: csv\n',
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{"id":"comma"}\n{"id":"empty"}\n');
  });

  test('malformed requests are 400 naming the problem', async () => {
    const cases: [unknown, string, string][] = [
      [{}, '', 'query'],
      [{ query: '   ' }, '', 'query'],
      [{ query: 'select 1', format: 'xml' }, '', 'format'],
      [{ query: 'select 1', delimiter: ',,' }, '', 'delimiter'],
      [{ query: 'select 1', delimiter: '"' }, '', 'delimiter'],
      [{ query: 'select 1', header: 'yes' }, '', 'header'],
      [{ query: 'select 1', delimeter: ',' }, '', 'delimeter'],
      [{ query: 'select 1', format: 'sql' }, '', 'table'],
      [{ query: 'select 1' }, '?_format=parquet', '_format'],
    ];
    for (const [body, query, word] of cases) {
      const res = await dumpSql(body, query);
      expect(res.status).toBe(400);
      expect((await res.json()).message).toContain(word);
    }
  });

  test('invalid SQL is 400 with PostgreSQL\'s message, before any body', async () => {
    const syntax = await dumpSql({ query: 'selec 1' });
    expect(syntax.status).toBe(400);
    expect((await syntax.json()).message).toContain('syntax error at or near "selec"');
    const missing = await dumpSql({ query: 'select * from nope' });
    expect(missing.status).toBe(400);
    expect((await missing.json()).message).toContain('relation "nope" does not exist');
  });

  test('an empty result is 200 with just the header; a large one streams complete in many batches', async () => {
    expect(await (await dumpSql({ query: 'select * from t where false', header: true })).text()).toBe('id\tn\tbig\tf\tnum\tb\tj\ts\tts\ttags\tbin\n');
    const res = await server.request('/$dump-sql', {
      method: 'POST',
      json: { query: `select g, repeat('x', 200) as pad from generate_series(1, 30000) g`, format: 'ndjson' },
    });
    const text = await res.text();
    const lines = text.trimEnd().split('\n');
    expect(lines.length).toBe(30000);
    expect(JSON.parse(lines[29999]!)).toEqual({ g: 30000, pad: 'x'.repeat(200) });
  });
});
