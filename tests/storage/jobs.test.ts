/**
 * The job table's SQL (storage/jobs.ts) on a real database: claims never share a job, an expired
 * lease is claimable and bumps the epoch, a fenced commit of a stale claim writes nothing, a hand
 * back is claimable at once, held and unknown-kind jobs are never claimed, group limits hold.
 */
import { afterAll, beforeAll, beforeEach, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import {
  claimJob, enterFence, finishJob, insertJob, leaveFence, releaseJob, renewLeases, setGroupState,
} from '../../src/storage/jobs.ts';
import { freshDatabase } from '../helpers/database.ts';

let sql: Sql;
beforeAll(async () => {
  sql = connect(await freshDatabase(), { max: 6 });
});
afterAll(async () => {
  await sql.end();
});
beforeEach(async () => {
  await sql`delete from fhirhose_job`;
});

const claim = (owner: string, options: { leaseMs?: number; fullGroups?: string[]; kinds?: string[] } = {}) =>
  claimJob(sql, { owner, leaseMs: options.leaseMs ?? 60_000, fullGroups: options.fullGroups ?? [], kinds: options.kinds ?? ['k'] });

async function add(key: string, extra: { grp?: string; kind?: string } = {}): Promise<void> {
  expect(await insertJob(sql, { kind: extra.kind ?? 'k', key, grp: extra.grp, payload: { key } })).toBe(true);
}

test('a key is one job: inserting it again is refused', async () => {
  await add('one');
  expect(await insertJob(sql, { kind: 'k', key: 'one', payload: {} })).toBe(false);
});

test('servers claiming at once never get the same job (FOR UPDATE SKIP LOCKED)', async () => {
  for (let i = 0; i < 8; i++) await add(`j${i}`);
  const claims = await Promise.all(Array.from({ length: 12 }, (_, i) => claim(`server-${i}`)));
  const got = claims.filter((c) => c !== undefined).map((c) => c!.key);
  expect(got.length).toBe(8);
  expect(new Set(got).size).toBe(8);
  expect(claims.filter((c) => c !== undefined).every((c) => c!.epoch === 1)).toBe(true);
});

test('a live lease is not claimable; an expired one is, under a new epoch; the stale claim is fenced out', async () => {
  await add('lease');
  const first = (await claim('a', { leaseMs: 500 }))!;
  expect(await claim('b')).toBeUndefined();
  await sql`update fhirhose_job set lease_until = now() - interval '1 second'`; // the lease ran out
  const second = (await claim('b'))!;
  expect(second).toMatchObject({ key: 'lease', owner: 'b', epoch: 2 });

  const stale = { id: first.id, owner: 'a', epoch: first.epoch };
  // the stale server's batch: it sees it lost at the start, and its closing renewal matches nothing
  const outcome = await sql.begin(async (tx) => {
    const mine = await enterFence(tx, stale);
    const renewed = await leaveFence(tx, stale, { leaseMs: 1000, checkpoint: 999 });
    return { mine, renewed };
  });
  expect(outcome).toEqual({ mine: false, renewed: false });
  expect(await renewLeases(sql, 'a', [{ id: first.id, epoch: first.epoch }], 1000)).toEqual(new Map());
  await releaseJob(sql, stale, { delayMs: 0 });
  expect(await finishJob(sql, stale)).toBe(false);

  const current = { id: second.id, owner: 'b', epoch: second.epoch };
  const fenced = await sql.begin(async (tx) => ({
    mine: await enterFence(tx, current),
    owner: (await tx`select current_setting('fhirhose.owner') as o`)[0]!.o,
    renewed: await leaveFence(tx, current, { leaseMs: 1000, checkpoint: 250 }),
  }));
  expect(fenced).toEqual({ mine: true, owner: 'b', renewed: true });
  const [row] = await sql`select owner, checkpoint::int as checkpoint from fhirhose_job`;
  expect(row).toEqual({ owner: 'b', checkpoint: 250 });
});

test('a job handed back is claimable at once by another server; a failed run waits for its back-off', async () => {
  await add('back');
  const first = (await claim('a'))!;
  await releaseJob(sql, { id: first.id, owner: 'a', epoch: first.epoch }, { delayMs: 0 });
  const second = (await claim('b'))!;
  expect(second).toMatchObject({ owner: 'b', epoch: 2, attempts: 0 });
  await releaseJob(sql, { id: second.id, owner: 'b', epoch: second.epoch }, { delayMs: 60_000, failed: 'database gone' });
  expect(await claim('c')).toBeUndefined();
  const [row] = await sql`select attempts, last_error, owner from fhirhose_job`;
  expect(row).toEqual({ attempts: 1, last_error: 'database gone', owner: null });
});

test('held, done and cancelled jobs and unknown kinds are never claimed; resume makes them ready', async () => {
  await add('g0', { grp: 'session' });
  await add('g1', { grp: 'session' });
  await add('other', { kind: 'export-part' });
  await sql.begin((tx) => setGroupState(tx, 'session', { from: ['ready'], to: 'held' }));
  expect(await claim('a')).toBeUndefined();
  await sql.begin((tx) => setGroupState(tx, 'session', { from: ['held'], to: 'ready' }));
  const got = (await claim('a'))!;
  expect(await finishJob(sql, { id: got.id, owner: 'a', epoch: got.epoch })).toBe(true);
  await sql.begin((tx) => setGroupState(tx, 'session', { from: ['ready', 'held'], to: 'cancelled' }));
  expect(await claim('a')).toBeUndefined();
  expect((await claim('a', { kinds: ['export-part'] }))?.key).toBe('other');
});

test('a full group is skipped; force-resume hands a running job over under a new epoch', async () => {
  await add('s1-0', { grp: 's1' });
  await add('s2-0', { grp: 's2' });
  expect((await claim('a', { fullGroups: ['s1'] }))?.key).toBe('s2-0');
  const running = (await claim('a'))!;
  expect(running.key).toBe('s1-0');
  await sql.begin((tx) => setGroupState(tx, 's1', { from: ['ready', 'held', 'failed'], to: 'ready', handOver: true }));
  expect(await renewLeases(sql, 'a', [{ id: running.id, epoch: running.epoch }], 1000)).toEqual(new Map());
  expect(await claim('b')).toMatchObject({ key: 's1-0', owner: 'b', epoch: running.epoch + 2 });
});
