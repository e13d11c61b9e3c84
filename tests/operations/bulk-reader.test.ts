/**
 * FHIRHOSE_READ_URL (SPEC §11): `$dump` and `$dump-sql` read from a real streaming hot standby
 * (tests/helpers/standby.ts), never older than the primary was when the request came; a standby
 * that lags, is down or restarts gives a clear 503 or an aborted body, never a short dump; writes
 * stay on the primary.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startReplicatedPair, type ReplicatedPair } from '../helpers/standby.ts';
import { basic, startTestServer, type TestServer } from '../helpers/server.ts';
import { connect, type Sql } from '../../src/storage/db.ts';
import { copyPatients, dechunk, rawGet, running } from './dump-helpers.ts';
import { within } from '../helpers/wait.ts';

const ROWS = 10_000; // ~34 MB of Synthea Patients: more than the buffers between a COPY and a paused client
const COPY = 'copy (select id, txid, ts, resource from "patient"%';
let pair: ReplicatedPair;
let primary: Sql;
let standby: Sql;
/** Waits up to 20 s for the standby to catch up. */
let patient: TestServer;
/** Waits at most 300 ms. */
let strict: TestServer;

beforeAll(async () => {
  pair = await startReplicatedPair();
  primary = connect(pair.primaryUrl, { max: 2 });
  standby = connect(pair.standbyUrl, { max: 2 });
  const env = { DATABASE_URL: pair.primaryUrl, FHIRHOSE_READ_URL: pair.standbyUrl };
  patient = await startTestServer({ ...env, FHIRHOSE_READ_MAX_LAG_MS: '20000' });
  strict = await startTestServer({ ...env, FHIRHOSE_READ_MAX_LAG_MS: '300' });
  await copyPatients(primary, ROWS);
}, 120_000);

afterAll(async () => {
  await standby`select pg_wal_replay_resume()`.catch(() => {});
  await patient?.stop();
  await strict?.stop();
  await primary?.end({ timeout: 1 });
  await standby?.end({ timeout: 1 });
  await pair?.stop();
}, 60_000);

const ids = (text: string) => text.split('\n').filter(Boolean).map((l) => JSON.parse(l).id as string);

async function dumpIds(server: TestServer): Promise<string[]> {
  const res = await server.request('/Patient/$dump', { headers: { 'accept-encoding': 'identity' } });
  expect(res.status).toBe(200);
  return ids(await res.text());
}

async function expect503(res: Response, message: RegExp): Promise<void> {
  const body = await res.json();
  expect({ status: res.status, message: body.message }).toMatchObject({ status: 503, message: expect.stringMatching(message) });
  expect(body.resourceType).toBe('OperationOutcome');
  expect(res.headers.get('retry-after')).toBe('5');
}

const dumpSql = (server: TestServer) => server.request('/$dump-sql', { method: 'POST', json: { query: 'select id from patient order by id', format: 'ndjson' } });

describe('reads from the standby', () => {
  test('$dump runs its COPY on the standby, none on the primary, and streams every row', async () => {
    const res = await rawGet(patient.url, '/Patient/$dump');
    expect(res.status).toBe(200);
    res.socket.pause();
    await within(30_000, async () => (await running(standby, COPY)).length > 0, 'the COPY on the standby');
    const [who] = await standby`select application_name from pg_stat_activity where query ilike ${COPY} and state = 'active'`;
    expect(who!.application_name).toBe('fhirhose-read');
    expect(await running(primary, COPY)).toEqual([]);
    res.socket.resume();
    const { body, complete } = dechunk(await res.ended);
    expect(complete).toBe(true);
    expect(ids(body.toString('utf8')).length).toBe(ROWS);
  }, 60_000);

  test('$dump-sql on the standby keeps the per-row bound: a value over FHIRHOSE_SQL_MAX_VALUE_BYTES is 413 at the first row, a later one aborts the body, and the next query is served', async () => {
    const query = (q: string) => patient.request('/$dump-sql', { method: 'POST', json: { query: q, format: 'ndjson' } });
    // 20 MB, over the default limit of 16 MiB: refused as it arrives, not buffered whole
    const first = await query("select pg_is_in_recovery() as standby, repeat('x', 20000000) as big");
    expect(first.status).toBe(413);
    const outcome = (await first.json()) as { message: string };
    expect(outcome.message).toContain('FHIRHOSE_SQL_MAX_VALUE_BYTES');
    expect(outcome.message).toContain(`over the limit of ${16 * 1024 * 1024} bytes`);

    const later = await query("select g, pg_is_in_recovery() as standby, case when g = 3000 then repeat('y', 20000000) else 'small' end as v from generate_series(1, 4000) g");
    expect(later.status).toBe(200);
    const reader = later.body!.getReader();
    const { value } = await reader.read();
    expect(JSON.parse(new TextDecoder().decode(value).split('\n')[0]!)).toEqual({ g: 1, standby: true, v: 'small' });
    await expect((async () => { for (;;) if ((await reader.read()).done) return; })()).rejects.toThrow();

    const after = await query("select pg_is_in_recovery() as standby, length(repeat('z', 1000000)) as n");
    expect(after.status).toBe(200);
    expect(JSON.parse((await after.text()).trim())).toEqual({ standby: true, n: 1_000_000 });
  }, 60_000);

  test('$dump-sql runs its cursor on the standby', async () => {
    const res = await patient.request('/$dump-sql', { method: 'POST', json: { query: "select count(*) as n, pg_is_in_recovery() as standby from patient where id like 'bulk-%'", format: 'ndjson' } });
    expect(res.status).toBe(200);
    expect(JSON.parse((await res.text()).trim())).toEqual({ n: ROWS, standby: true });
  });

  test('a write answered just before the dump is in it: the read waits until the standby has replayed it', async () => {
    await standby`select pg_wal_replay_pause()`;
    try {
      expect((await patient.request('/Patient/written-while-paused', { method: 'PUT', json: { resourceType: 'Patient' } })).status).toBe(201);
      const [{ now: before }] = (await standby`select now()`) as unknown as [{ now: Date }];
      const pending = dumpIds(patient);
      // the server is polling the standby's replay position (its query shows, started after `before`)
      await within(30_000, async () => (await standby`select 1 from pg_stat_activity
        where application_name = 'fhirhose-read' and query ilike '%pg_last_wal_replay_lsn%' and query_start > ${before}`).length > 0,
      'the server polling the standby\'s replay position');
      const [{ n }] = (await standby`select count(*)::int as n from patient where id = 'written-while-paused'`) as unknown as [{ n: number }];
      expect(n).toBe(0); // not replayed yet
      await standby`select pg_wal_replay_resume()`;
      expect(await pending).toContain('written-while-paused');
    } finally {
      await standby`select pg_wal_replay_resume()`;
    }
  }, 60_000);
});

describe('a standby that lags, stops or restarts', () => {
  test('a standby behind by more than FHIRHOSE_READ_MAX_LAG_MS → 503 that says how far, for $dump and $dump-sql; caught up → 200', async () => {
    await standby`select pg_wal_replay_pause()`;
    try {
      expect((await strict.request('/Patient/late', { method: 'PUT', json: { resourceType: 'Patient' } })).status).toBe(201);
      const behind = /read replica \(FHIRHOSE_READ_URL\) is behind: it has replayed the WAL up to [0-9A-F]+\/[0-9A-F]+, and did not reach [0-9A-F]+\/[0-9A-F]+.*FHIRHOSE_READ_MAX_LAG_MS \(300 ms\)/;
      await expect503(await strict.request('/Patient/$dump'), behind);
      await expect503(await dumpSql(strict), behind);
    } finally {
      await standby`select pg_wal_replay_resume()`;
    }
    let last = 0;
    await within(30_000, async () => {
      const res = await strict.request('/Patient/$dump');
      last = res.status;
      await res.body?.cancel();
      return last === 200;
    }, 'the standby caught up');
    expect(last).toBe(200);
    expect(await dumpIds(strict)).toContain('late');
  }, 60_000);

  test('a standby that is down → 503 naming the replica; writes still go to the primary; back up → the dump has them', async () => {
    await pair.stopStandby();
    try {
      await expect503(await patient.request('/Patient/$dump'), /^The read replica \(FHIRHOSE_READ_URL\) cannot be reached: .+/);
      await expect503(await dumpSql(patient), /^The read replica \(FHIRHOSE_READ_URL\) cannot be reached/);
      expect((await patient.request('/Patient/written-while-down', { method: 'PUT', json: { resourceType: 'Patient' } })).status).toBe(201);
      expect((await patient.request('/Patient/written-while-down')).status).toBe(200);
      expect((await patient.request('/Patient?_id=written-while-down')).status).toBe(200);
    } finally {
      await pair.startStandby();
    }
    expect(await dumpIds(patient)).toContain('written-while-down');
  }, 60_000);

  /** Reads at least `bytes` of `reader`; fails if the body ends first. */
  async function readAtLeast(reader: ReadableStreamDefaultReader<Uint8Array>, bytes: number): Promise<void> {
    for (let received = 0; received < bytes;) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`the body ended after ${received} bytes, before the standby restart`);
      received += value.length;
    }
  }

  /** Reads to the end; resolves with the byte count only if the body ends cleanly. */
  async function drain(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<number> {
    for (let received = 0; ;) {
      const { done, value } = await reader.read();
      if (done) return received;
      received += value.length;
    }
  }

  test('a standby restarted mid-$dump aborts the body: the client read fails, never a clean short dump', async () => {
    const res = await patient.request('/Patient/$dump', { headers: { 'accept-encoding': 'identity' } });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    await readAtLeast(reader, 256 * 1024);
    await pair.restartStandby();
    await expect(drain(reader)).rejects.toThrow();
    // the pool's dead connections are replaced: the next dump is whole
    expect((await dumpIds(patient)).filter((id) => id.startsWith('bulk-')).length).toBe(ROWS);
  }, 120_000); // a restart, then up to 20 s for the standby to catch up: generous on a loaded machine

  test('a standby restarted mid-$dump-sql aborts the body the same way', async () => {
    // whole resources: ~34 MB, fetched ~1 MB at a time, so most is still to come after the restart
    const res = await patient.request('/$dump-sql', { method: 'POST', json: { query: 'select id, resource from patient', format: 'ndjson' } });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    await readAtLeast(reader, 64 * 1024);
    await pair.restartStandby();
    await expect(drain(reader)).rejects.toThrow();
    const after = await patient.request('/$dump-sql', { method: 'POST', json: { query: "select count(*) as n from patient where id like 'bulk-%'", format: 'ndjson' } });
    expect(JSON.parse(await after.text())).toEqual({ n: ROWS });
  }, 120_000);
});

describe('security with a replica', () => {
  test('wrong credentials → 401 and a client without a policy → 403, before the replica is asked', async () => {
    await pair.stopStandby();
    try {
      expect((await patient.request('/Patient/$dump', { auth: basic('root', 'wrong') })).status).toBe(401);
      expect((await patient.request('/Patient/$dump', { auth: null })).status).toBe(401);
      expect((await patient.request('/', { method: 'PUT', json: [{ resourceType: 'Client', id: 'nopolicy', secret: 's', grant_types: ['basic'] }] })).status).toBe(200);
      expect((await patient.request('/Patient/$dump', { auth: basic('nopolicy', 's') })).status).toBe(403);
    } finally {
      await pair.startStandby();
    }
  }, 60_000);
});
