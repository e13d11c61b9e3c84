/**
 * SPEC §10 "shutdown drains": on SIGTERM the server refuses new connections at once, lets the
 * requests in flight finish (a streaming $dump to its last line) within FHIRHOSE_SHUTDOWN_GRACE_MS,
 * cuts what is left after it, and exits 0.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, type Sql } from '../src/storage/db.ts';
import { freePort, freshDatabase } from './helpers/database.ts';
import { spawnServer, type Child } from './helpers/child-server.ts';
import { dechunk, rawGet } from './operations/dump-helpers.ts';
import { within } from './helpers/wait.ts';

const ROWS = 10_000;
let databaseUrl: string;
let sql: Sql;

beforeAll(async () => {
  databaseUrl = await freshDatabase();
  sql = connect(databaseUrl, { max: 1 });
  // run the migrations through a first start, then ~30 MB of rows: more than socket buffers hold
  const first = await spawnServer(databaseUrl, await freePort(), { FHIRHOSE_LOG: 'quiet' });
  first.proc.kill('SIGTERM');
  expect(await first.proc.exited).toBe(0);
  await sql.unsafe(`insert into observation (id, txid, status, resource)
    select 'o' || g, g, 'created', jsonb_build_object('status', 'final', 'note', jsonb_build_array(jsonb_build_object('text', repeat(md5(g::text), 100))))
    from generate_series(1, ${ROWS}) g`);
}, 90_000);
afterAll(async () => { await sql.end(); });

const refused = (child: Child) => fetch(`${child.url}/health`).then(() => false, () => true);

test('SIGTERM: new connections are refused, a $dump in flight still ends complete, then exit 0', async () => {
  const child = await spawnServer(databaseUrl, await freePort(), { FHIRHOSE_SHUTDOWN_GRACE_MS: '60000' });
  const dump = await rawGet(child.url, '/Observation/$dump');
  expect(dump.status).toBe(200);
  dump.socket.pause(); // a slow client: the dump is in flight when the signal comes
  child.proc.kill('SIGTERM');
  expect(await within(10_000, async () => await refused(child))).toBeGreaterThanOrEqual(0);
  expect(child.proc.exitCode).toBeNull(); // still serving the dump
  dump.socket.resume();
  const { body, complete } = dechunk(await dump.ended);
  expect(complete).toBe(true);
  expect(body.toString('utf8').trimEnd().split('\n')).toHaveLength(ROWS);
  expect(await child.proc.exited).toBe(0);
  expect(child.output()).toContain('FHIRHOSE_SHUTDOWN_GRACE_MS');
  expect(child.output()).toContain('stopped');
}, 120_000);

test('a client still stalled after the grace is cut; the server exits 0 all the same', async () => {
  const child = await spawnServer(databaseUrl, await freePort(), { FHIRHOSE_SHUTDOWN_GRACE_MS: '1500', FHIRHOSE_SLOW_READER_BYTES_PER_SEC: '0' });
  const dump = await rawGet(child.url, '/Observation/$dump');
  expect(dump.status).toBe(200);
  dump.socket.pause();
  child.proc.kill('SIGTERM');
  expect(await child.proc.exited).toBe(0);
  expect(child.output()).toMatch(/1 request\(s\) still running after 1500 ms \(FHIRHOSE_SHUTDOWN_GRACE_MS\): cut/);
  dump.socket.resume();
  expect(dechunk(await dump.ended).complete).toBe(false);
}, 120_000);
