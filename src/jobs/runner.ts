/**
 * The job runner (SPEC §11): one per server, for every kind. It claims ready jobs with one
 * `FOR UPDATE SKIP LOCKED` statement up to FHIRHOSE_JOB_CONCURRENCY, runs each through its kind,
 * and owns everything about leases so the kinds do not:
 *
 * - every commit of a kind is fenced: the transaction checks at its start that this server still
 *   holds the claim (owner and epoch) and, last, renews the lease under the same check; if the
 *   claim is gone the transaction rolls back and the run ends. A server frozen past its lease
 *   (SIGSTOP, a stalled VM) wakes up to find a newer epoch and writes nothing;
 * - a heartbeat renews the leases between commits (work waiting on a slow source), and notices a
 *   job that was lost, paused, aborted or handed over: its run is told to stop at once;
 * - wake-ups come through LISTEN/NOTIFY (`fhirhose_jobs`: new work; `fhirhose_actions`: a state
 *   change, re-checked at once), and a poll every second or so covers a lost notification;
 * - on stop (SIGTERM) every run stops at a batch boundary and its job is handed back (owner
 *   cleared, claimable at once by any server); a server that dies loses its jobs to whoever claims
 *   them after the lease ends (FHIRHOSE_LEASE_MS).
 */
import crypto from 'node:crypto';
import os from 'node:os';
import type { Config } from '../config.ts';
import type { Sql } from '../storage/db.ts';
import {
  claimJob, enterFence, finishJob, leaveFence, releaseJob, renewLeases, type Claim, type JobRow,
} from '../storage/jobs.ts';
import { subscribe, type Subscription } from '../storage/notify.ts';
import type { Job, JobKind } from './job.ts';
import { eventsOf } from '../logging.ts';

export interface JobRunner {
  /** This server's name in `owner` columns: host:pid:random. */
  readonly owner: string;
  start(): Promise<void>;
  /** Stops every run at a batch boundary and hands its job back. */
  stop(): Promise<void>;
  /** Look for work now (new jobs were created here). */
  wake(): void;
}

/** The commit found the claim gone: nothing was written. */
export class LeaseLost extends Error {
  constructor(label: string) {
    super(`${label}: another claim holds the job now; nothing more is written by this server`);
  }
}

interface Run {
  row: JobRow;
  kind: JobKind;
  claim: Claim;
  controller: AbortController;
  checkpoint: number;
  lost: boolean;
  done: Promise<void>;
}

const POLL_MS = 1000;
const POLL_JITTER_MS = 500;
const SWEEP_EVERY_MS = 30_000;
/** A run that stopped by itself (its session left `active`) is not claimed again before this. */
const STOPPED_DELAY_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
const STOP_WAIT_MS = 10_000;

export function createJobRunner(deps: { sql: Sql; config: Config; log: (line: string) => void; kinds: JobKind[] }): JobRunner {
  const { sql, config, log } = deps;
  const event = eventsOf(log);
  const kinds = new Map(deps.kinds.map((k) => [k.name, k]));
  const owner = `${os.hostname()}:${process.pid}:${crypto.randomBytes(3).toString('hex')}`;
  const leaseMs = config.leaseMs;
  const running = new Map<string, Run>();
  const subscriptions: Subscription[] = [];
  let stopping = false;
  let filling = false;
  let fillAgain = false;
  let pollTimer: ReturnType<typeof setTimeout> | undefined;
  let beatTimer: ReturnType<typeof setInterval> | undefined;
  let lastSweep = 0;
  let lastError = '';

  /** Logs a database error of the loop once per distinct message, not once per poll. */
  function loopError(what: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    if (message !== lastError) log(`job runner ${owner}: ${what} failed: ${message}`);
    lastError = message;
  }

  function wake(): void {
    if (stopping) return;
    if (filling) {
      fillAgain = true;
      return;
    }
    filling = true;
    void fill().finally(() => {
      filling = false;
      if (fillAgain && !stopping) {
        fillAgain = false;
        wake();
      }
    });
  }

  async function fill(): Promise<void> {
    while (!stopping && running.size < config.jobConcurrency) {
      let row: JobRow | undefined;
      try {
        row = await claimJob(sql, { owner, leaseMs, fullGroups: fullGroups(), kinds: [...kinds.keys()] });
        lastError = '';
      } catch (error) {
        loopError('claiming work', error);
        return;
      }
      if (!row) return;
      if (stopping) {
        await releaseJob(sql, { id: row.id, owner, epoch: row.epoch }, { delayMs: 0 }).catch(() => {});
        return;
      }
      launch(row);
    }
  }

  function fullGroups(): string[] {
    const counts = new Map<string, number>();
    const full: string[] = [];
    for (const run of running.values()) {
      if (run.row.grp === null) continue;
      const n = (counts.get(run.row.grp) ?? 0) + 1;
      counts.set(run.row.grp, n);
      if (n >= (run.kind.groupLimit ?? Infinity)) full.push(run.row.grp);
    }
    return full;
  }

  function launch(row: JobRow): void {
    const kind = kinds.get(row.kind)!;
    const run: Run = {
      row, kind, claim: { id: row.id, owner, epoch: row.epoch }, controller: new AbortController(),
      checkpoint: row.checkpoint, lost: false, done: Promise.resolve(),
    };
    const key = `${row.id}:${row.epoch}`;
    running.set(key, run);
    run.done = execute(run).finally(() => {
      running.delete(key);
      wake();
    });
  }

  async function execute(run: Run): Promise<void> {
    const label = run.kind.describe(handle(run));
    const { claim } = run;
    // SPEC §14: one structured line per state change of a job on this server (ids and states only:
    // payloads hold source URLs, which may carry credentials)
    const changed = (state: string) => event({ event: 'job', id: claim.id, kind: run.row.kind, key: run.row.key, state, epoch: claim.epoch, checkpoint: run.checkpoint, owner });
    changed('claimed');
    try {
      const outcome = await run.kind.run(handle(run), run.controller.signal);
      if (run.lost) {
        changed('lost');
        return log(`${label}: lost to another server (a newer claim of the job); stopped without writing`);
      }
      if (outcome === 'done') {
        if (await finishJob(sql, claim)) changed('done');
        return;
      }
      if (stopping) log(`${label}: stopping with the server; handed back at checkpoint ${run.checkpoint}`);
      await releaseJob(sql, claim, { delayMs: stopping ? 0 : STOPPED_DELAY_MS });
      changed('released');
    } catch (error) {
      if (error instanceof LeaseLost || run.lost) {
        run.lost = true;
        changed('lost');
        return log(`${label}: lost to another server (a newer claim of the job); stopped without writing`);
      }
      if (stopping) {
        log(`${label}: stopping with the server; handed back at checkpoint ${run.checkpoint}`);
        await releaseJob(sql, claim, { delayMs: 0 }).catch(() => {});
        changed('released');
        return;
      }
      changed('retrying');
      const delay = Math.min(BACKOFF_MAX_MS, 1000 * 2 ** run.row.attempts);
      log(`${label}: failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
      log(`${label}: trying again in ${delay / 1000} s`);
      const message = error instanceof Error ? error.message : String(error);
      // If the database is gone this fails too: the lease then runs out and the job is claimed again.
      await releaseJob(sql, claim, { delayMs: delay, failed: message }).catch(() => {});
    }
  }

  function handle(run: Run): Job {
    const { row, claim } = run;
    return {
      id: row.id,
      kind: row.kind,
      key: row.key,
      payload: row.payload,
      epoch: row.epoch,
      checkpoint: row.checkpoint,
      attempts: row.attempts,
      async commit(work) {
        let checkpoint: number | undefined;
        try {
          const value = await sql.begin(async (tx) => {
            if (!(await enterFence(tx, claim))) throw new LeaseLost(run.kind.describe(handle(run)));
            const result = await work(tx);
            checkpoint = result.checkpoint;
            if (!(await leaveFence(tx, claim, { leaseMs, checkpoint }))) throw new LeaseLost(run.kind.describe(handle(run)));
            return result.value;
          });
          if (checkpoint !== undefined) run.checkpoint = checkpoint;
          return value as never;
        } catch (error) {
          if (error instanceof LeaseLost) {
            run.lost = true;
            run.controller.abort('lost');
          }
          throw error;
        }
      },
    };
  }

  /**
   * The heartbeat, and the re-check after an action: renews every lease held; a run whose job is
   * gone (a newer epoch) or no longer `ready` (paused, aborted, parked) is told to stop now.
   */
  async function beat(): Promise<void> {
    const runs = [...running.values()].filter((r) => !r.controller.signal.aborted);
    if (runs.length === 0) return;
    let states: Map<string, string>;
    try {
      states = await renewLeases(sql, owner, runs.map((r) => ({ id: r.claim.id, epoch: r.claim.epoch })), leaseMs);
    } catch (error) {
      loopError('renewing leases', error);
      return;
    }
    for (const run of runs) {
      const state = states.get(run.claim.id);
      if (state === undefined) {
        run.lost = true;
        run.controller.abort('lost');
      } else if (state !== 'ready') {
        run.controller.abort(state);
      }
    }
  }

  async function sweep(): Promise<void> {
    lastSweep = Date.now();
    for (const kind of kinds.values()) {
      await kind.sweep?.().catch((error) => loopError(`sweeping ${kind.name} scratch`, error));
    }
  }

  function schedulePoll(): void {
    if (stopping) return;
    pollTimer = setTimeout(() => {
      wake();
      if (Date.now() - lastSweep > SWEEP_EVERY_MS) void sweep();
      schedulePoll();
    }, POLL_MS + Math.random() * POLL_JITTER_MS);
  }

  return {
    owner,
    async start() {
      log(`job runner ${owner}: claiming ${[...kinds.keys()].join(', ')} jobs (up to ${config.jobConcurrency} at once, lease ${leaseMs} ms)`);
      subscriptions.push(await subscribe(sql, 'fhirhose_jobs', () => wake(), { onListen: () => wake() }));
      subscriptions.push(await subscribe(sql, 'fhirhose_actions', () => void beat()));
      await sweep();
      beatTimer = setInterval(() => void beat(), Math.max(100, Math.floor(leaseMs / 3)));
      schedulePoll();
      wake();
    },
    async stop() {
      stopping = true;
      clearTimeout(pollTimer);
      clearInterval(beatTimer);
      for (const run of running.values()) run.controller.abort('shutdown');
      const all = Promise.all([...running.values()].map((r) => r.done));
      await Promise.race([all, Bun.sleep(STOP_WAIT_MS)]);
      await Promise.all(subscriptions.map((s) => s.unlisten().catch(() => {})));
    },
    wake,
  };
}
