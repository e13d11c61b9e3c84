/**
 * The job table (SPEC §11, STYLE "Growing the house"): every piece of background work is a row
 * with a lifecycle, claimed with a lease. All job SQL lives here.
 *
 * - `state`: ready (claimable) | held (paused, or parked by a failed sibling) | done | failed |
 *   cancelled. Only `ready` rows are ever claimed.
 * - `owner`, `epoch`, `lease_until`: who runs the job now, which claim this is, and until when
 *   (the DATABASE clock, so servers with skewed clocks agree). A claim bumps the epoch; every write
 *   of the work is fenced on (owner, epoch), so a server that froze past its lease writes nothing.
 * - `checkpoint`: how far the work got, written in the same transaction as the work it describes.
 * - `attempts`: failed runs in a row (the database gone, a bug); drives the back-off in `run_at`.
 */
import type { AnySql, Sql, TransactionSql } from './db.ts';

export type JobState = 'ready' | 'held' | 'done' | 'failed' | 'cancelled';

export interface JobRow {
  id: string;
  kind: string;
  key: string;
  grp: string | null;
  state: JobState;
  payload: Record<string, unknown>;
  owner: string | null;
  epoch: number;
  checkpoint: number;
  attempts: number;
}

/** Who holds a claim: the fence of every write. */
export interface Claim {
  id: string;
  owner: string;
  epoch: number;
}

/** `ms` from now on the database clock, as a fragment of a tagged statement. */
const after = (sql: AnySql, ms: number) => sql`now() + (${ms}::int * interval '1 millisecond')`;
/** The fence of every write: the row of this claim, still owned under its epoch. */
const claimed = (sql: AnySql, claim: Claim) => sql`id = ${claim.id}::bigint and owner = ${claim.owner} and epoch = ${claim.epoch}::bigint`;

export const JOBS_TABLE_SQL = `
create table if not exists fhirhose_job (
  id bigint generated always as identity primary key,
  kind text not null,
  key text not null unique,
  grp text,
  state text not null default 'ready' check (state in ('ready', 'held', 'done', 'failed', 'cancelled')),
  payload jsonb not null default '{}',
  owner text,
  epoch bigint not null default 0,
  lease_until timestamptz,
  checkpoint bigint not null default 0,
  attempts int not null default 0,
  last_error text,
  run_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists fhirhose_job_claimable on fhirhose_job (id) where state = 'ready';
create index if not exists fhirhose_job_grp on fhirhose_job (grp);`;

/** A new job, claimable at once when `ready`; false if a job with this key exists. */
export async function insertJob(
  tx: AnySql,
  job: { kind: string; key: string; grp?: string; payload: Record<string, unknown>; state?: JobState },
): Promise<boolean> {
  const rows = await tx`insert into fhirhose_job (kind, key, grp, payload, state)
    values (${job.kind}, ${job.key}, ${job.grp ?? null}, ${tx.json(job.payload as never)}, ${job.state ?? 'ready'})
    on conflict (key) do nothing returning id`;
  return rows.length > 0;
}

/**
 * Claims the oldest claimable job: `ready`, due, and either unowned (handed back) or with an
 * expired lease (its server died or froze). ONE statement with FOR UPDATE SKIP LOCKED, so servers
 * claiming at once never wait for each other nor take the same row. `fullGroups`: groups this
 * server runs enough jobs of already (inputs of one session: FHIRHOSE_IMPORT_CONCURRENCY).
 */
export async function claimJob(
  sql: Sql,
  options: { owner: string; leaseMs: number; fullGroups: string[]; kinds: string[] },
): Promise<JobRow | undefined> {
  const [row] = await sql<JobRow[]>`
    with next as (
      select id from fhirhose_job
      where state = 'ready' and run_at <= now() and (owner is null or lease_until < now())
        and kind = any(${options.kinds}::text[]) and (grp is null or grp <> all(${options.fullGroups}::text[]))
      order by id limit 1
      for update skip locked
    )
    update fhirhose_job j set owner = ${options.owner}, epoch = j.epoch + 1, lease_until = ${after(sql, options.leaseMs)}, updated_at = now()
    from next where j.id = next.id
    returning j.id::text as id, j.kind, j.key, j.grp, j.state, j.payload, j.owner,
      j.epoch::float8 as epoch, j.checkpoint::float8 as checkpoint, j.attempts`;
  return row;
}

/**
 * Opens a fenced transaction: tags it with the claim (`fhirhose.owner`, `fhirhose.epoch`, readable
 * by triggers with current_setting) and says whether the claim still holds, so a stale server
 * stops before doing the work. Cheap: no row lock.
 */
export async function enterFence(tx: TransactionSql, claim: Claim): Promise<boolean> {
  const [row] = await tx<{ mine: boolean }[]>`
    select set_config('fhirhose.owner', ${claim.owner}, true), set_config('fhirhose.epoch', ${String(claim.epoch)}, true),
      exists (select 1 from fhirhose_job where id = ${claim.id}::bigint and owner = ${claim.owner} and epoch = ${claim.epoch}::bigint) as mine`;
  return row?.mine === true;
}

/**
 * Closes a fenced transaction: renews the lease and records the checkpoint, only if the claim still
 * holds. False: another server claimed the job (a newer epoch) or it was handed to a new claim; the
 * caller must roll back. Last in the transaction, so the row lock lasts only until the commit.
 */
export async function leaveFence(tx: TransactionSql, claim: Claim, options: { leaseMs: number; checkpoint?: number }): Promise<boolean> {
  const rows = await tx`
    update fhirhose_job set lease_until = ${after(tx, options.leaseMs)}, checkpoint = coalesce(${options.checkpoint ?? null}::bigint, checkpoint),
      attempts = 0, last_error = null, updated_at = now()
    where ${claimed(tx, claim)} returning id`;
  return rows.length > 0;
}

/**
 * Renews the leases this server holds (the heartbeat between batches, for work that waits on a
 * slow source). Returns the state of each job still held under its epoch; a job missing from the
 * answer was lost: claimed by another server after our lease ran out, or re-claimable after a
 * force-resume.
 */
export async function renewLeases(sql: Sql, owner: string, held: { id: string; epoch: number }[], leaseMs: number): Promise<Map<string, JobState>> {
  if (held.length === 0) return new Map();
  const rows = await sql<{ id: string; state: JobState }[]>`
    update fhirhose_job j set lease_until = ${after(sql, leaseMs)}
    from unnest(${held.map((h) => h.id)}::bigint[], ${held.map((h) => h.epoch)}::bigint[]) as h(id, epoch)
    where j.id = h.id and j.epoch = h.epoch and j.owner = ${owner}
    returning j.id::text as id, j.state`;
  return new Map(rows.map((r) => [r.id, r.state]));
}

/**
 * Hands a job back: no owner, claimable by any server once `run_at` is due. `failed`: the run
 * failed (counted in `attempts`, the message kept for the operator).
 */
export async function releaseJob(sql: Sql, claim: Claim, options: { delayMs: number; failed?: string }): Promise<void> {
  const failed = options.failed ?? null;
  await sql`
    update fhirhose_job set owner = null, lease_until = null, run_at = ${after(sql, options.delayMs)},
      attempts = attempts + ${failed === null ? 0 : 1}, last_error = coalesce(${failed}::text, last_error),
      updated_at = now()
    where ${claimed(sql, claim)}`;
}

/**
 * Cancels a job for good (its work was deleted, e.g. a DELETEd `$export`), in the caller's
 * transaction: never claimed again, and the current claim ends (new epoch), so the server running
 * it can commit nothing more; its heartbeat stops the run.
 */
export async function cancelJob(tx: TransactionSql, key: string): Promise<void> {
  await tx`update fhirhose_job set state = 'cancelled', owner = null, epoch = epoch + 1, lease_until = null, updated_at = now()
    where key = ${key} and state not in ('done', 'cancelled')`;
}

/** The job is finished: `done`, no owner. False if the claim no longer held. */
export async function finishJob(sql: Sql, claim: Claim): Promise<boolean> {
  const rows = await sql`
    update fhirhose_job set state = 'done', owner = null, lease_until = null, attempts = 0, last_error = null, updated_at = now()
    where ${claimed(sql, claim)} returning id`;
  return rows.length > 0;
}

/**
 * Moves the jobs of a group (the inputs of one `$import` session) from `from` states to `to`, in the
 * caller's transaction (the one that moves the session). `handOver`: also end the current claims
 * (owner cleared, epoch bumped): the server running them can commit nothing more, and the job is
 * claimable at once (force-resume). `only`: restrict to these keys.
 */
export async function setGroupState(
  tx: TransactionSql,
  grp: string,
  change: { from: JobState[]; to: JobState; handOver?: boolean; only?: string[] },
): Promise<void> {
  const handOver = change.handOver ?? false;
  const ready = change.to === 'ready';
  const only = change.only ?? null;
  await tx`
    update fhirhose_job set state = ${change.to},
      owner = case when ${handOver} then null else owner end,
      epoch = case when ${handOver} then epoch + 1 else epoch end,
      lease_until = case when ${handOver} then null else lease_until end,
      run_at = case when ${ready} then now() else run_at end,
      attempts = case when ${ready} then 0 else attempts end,
      updated_at = now()
    where grp = ${grp} and state = any(${change.from}::text[]) and (${only}::text[] is null or key = any(${only}::text[]))`;
}

export interface Lease {
  key: string;
  owner: string;
  /** ISO instant, database clock. */
  leaseUntil: string;
}

/** The live leases of a group's jobs, or of every job: who runs what and until when, for status answers. */
export async function groupLeases(sql: AnySql, grp?: string): Promise<Map<string, Lease>> {
  const rows = await sql<Lease[]>`select key, owner,
      to_char(lease_until at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as "leaseUntil"
    from fhirhose_job where (${grp ?? null}::text is null or grp = ${grp ?? null}) and owner is not null and lease_until > now()`;
  return new Map(rows.map((r) => [r.key, r]));
}

/** The jobs of `kind` whose lease holds now: their payloads and epochs (what scratch tables are in use). */
export async function liveJobs(sql: Sql, kind: string): Promise<{ payload: Record<string, unknown>; epoch: number }[]> {
  return await sql<{ payload: Record<string, unknown>; epoch: number }[]>`select payload, epoch::float8 as epoch from fhirhose_job
    where kind = ${kind} and owner is not null and lease_until > now()`;
}

/**
 * Jobs by kind and state for `/metrics` (SPEC §14): a `ready` job with a live lease is `running`,
 * one without is `queued`; the other states as they are.
 */
export async function jobCounts(sql: AnySql): Promise<{ kind: string; state: string; n: number }[]> {
  const rows = await sql`select kind,
      case when state = 'ready' and owner is not null and lease_until > now() then 'running'
           when state = 'ready' then 'queued' else state end as state,
      count(*)::int as n
    from fhirhose_job group by 1, 2 order by 1, 2`;
  return rows as unknown as { kind: string; state: string; n: number }[];
}
