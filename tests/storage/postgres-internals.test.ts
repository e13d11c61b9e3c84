/**
 * The one module that reaches into postgres.js (src/storage/postgres-internals.ts) checks at
 * start-up that what it reaches for is there: on the installed postgres.js it passes, and a
 * postgres.js lacking any of it stops the server with a message naming the installed version
 * and what is missing.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import {
  assertInternals, BUILT_FOR, checkPostgresInternals, installedVersion, missingInternals, sampleInternals, type InternalsSample,
} from '../../src/storage/postgres-internals.ts';
import { freshDatabase } from '../helpers/database.ts';

let sql: Sql;
let real: InternalsSample;
beforeAll(async () => {
  sql = connect(await freshDatabase(), { max: 2 });
  real = await sampleInternals(sql);
});
afterAll(async () => { await sql.end(); });

test('the installed postgres.js is the pinned version and has everything fhirhose reaches for', async () => {
  expect(installedVersion()).toBe(BUILT_FOR);
  expect(missingInternals(real)).toEqual([]);
  expect(real.unpatched).toEqual([]); // every fix of patches/postgres.mjs is in the installed copy
  await checkPostgresInternals(sql); // what startServer runs first
  const [row] = await sql`select 2 as two`; // the check left the pool usable
  expect(row!.two).toBe(2);
});

test('a query object without its canceller refuses the start, naming the postgres.js version and the field', () => {
  const { canceller: _dropped, ...withoutCanceller } = real.unsent as Record<string, unknown>;
  expect(() => assertInternals({ ...real, unsent: withoutCanceller }, '9.9.9')).toThrow(
    'postgres.js 9.9.9 lacks what fhirhose relies on: Query.canceller (a function). fhirhose is built for postgres.js 3.4.9',
  );
});

test('each missing reach-in is named: backend keys, the COPY stream fields, the one-statement protocol', () => {
  const broken: InternalsSample = {
    unsent: real.unsent,
    sent: { state: null },
    result: { state: { pid: 1 } },
    copyStream: { _readableState: {} },
    oneStatementOnly: false,
    unpatched: [2, 3],
  };
  expect(missingInternals(broken)).toEqual([
    'Query.state.{pid,secret} once sent',
    'Result.state.{pid,secret}',
    "the COPY stream's _readableState.highWaterMark",
    "the COPY stream's _read (resumes the socket)",
    'unsafe(…, [], { simple: false }) (the extended protocol: one statement only)',
    'fix 2, 3 of patches/postgres.mjs (npm install or npm ci applies it: its postinstall script)',
  ]);
  expect(() => assertInternals(broken)).toThrow(`postgres.js ${BUILT_FOR} lacks what fhirhose relies on: Query.state`);
});
