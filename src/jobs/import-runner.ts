/**
 * The `$import` runner (SPEC §8): one in-process task per running session, its inputs in
 * parallel up to FHIRHOSE_IMPORT_CONCURRENCY. Sessions are rows with a lifecycle (STYLE §9): the
 * workers re-read the session's state in every batch transaction, so pause and abort are state
 * changes. `notify` only makes them notice sooner (frees a slow source at once) and starts work.
 */
import type { Config } from '../config.ts';
import type { Sql } from '../storage/db.ts';
import { activeSessionIds } from '../storage/import-sessions.ts';
import { dropOrphanStaging, runnableInputs } from '../storage/import-inputs.ts';
import { sessionLocks } from '../storage/import-locks.ts';
import type { SessionState } from '../operations/import-actions.ts';
import { runInput, inputLabel, stagingName, STAGING_PREFIX, type InputOutcome } from './import-input.ts';
import { completeSession, failSession } from './import-finish.ts';

export interface ImportRunner {
  /** Resumes the `active` sessions left by a previous run (graceful stop or crash). */
  start(): Promise<void>;
  /** Stops every task at a batch boundary, leaving sessions `active` for the next start. */
  stop(): Promise<void>;
  /** A session's state was changed by an action; `restart`: force-resume, rerun from checkpoints. */
  notify(id: string, state: SessionState, options?: { restart?: boolean }): void;
}

interface Task {
  again: boolean;
  /** Another server holds the session now (our lock went with a lost connection): stop here. */
  lost: boolean;
  run: AbortController;
  done: Promise<void>;
}

const LOCK_RETRY_MS = 1000;
const STOP_WAIT_MS = 10_000;
/** A session whose task failed (the database unreachable, say) is tried again after 1, 2, 4 … 60 s. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 60_000;

export function createImportRunner(deps: { sql: Sql; config: Config; log: (line: string) => void }): ImportRunner {
  const { sql, config, log } = deps;
  const tasks = new Map<string, Task>();
  const retries = new Map<string, { delay: number; timer?: ReturnType<typeof setTimeout> }>();
  const shutdown = new AbortController();
  const locks = sessionLocks(sql, (id) => {
    const task = tasks.get(id);
    if (!task) return;
    log(`import ${id}: its lock went with a lost database connection and another server holds it now; stopping here`);
    task.lost = true;
    task.run.abort('lock lost');
  });

  function spawn(id: string): void {
    const task: Task = { again: false, lost: false, run: new AbortController(), done: Promise.resolve() };
    tasks.set(id, task);
    let failed = false;
    task.done = runSession(id, task)
      .catch((error) => {
        failed = true;
        log(`import ${id}: runner failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
      })
      .finally(() => {
        tasks.delete(id);
        if (shutdown.signal.aborted) return;
        // A resume that arrived while the task was winding down must not be lost.
        if (task.again) return spawn(id);
        if (failed) retryLater(id);
        else retries.delete(id);
      });
  }

  /**
   * A task that failed outside any input (the database unreachable when a round starts, or while
   * it records an input's failure) leaves its session `active` with nothing running: try again,
   * less and less often. The session is re-read then: if it is still active, its inputs go on from
   * their checkpoints.
   */
  function retryLater(id: string): void {
    const retry = retries.get(id) ?? { delay: RETRY_FIRST_MS };
    retries.set(id, retry);
    log(`import ${id}: trying again in ${retry.delay / 1000} s`);
    retry.timer = setTimeout(() => {
      retry.delay = Math.min(retry.delay * 2, RETRY_MAX_MS);
      if (!tasks.has(id) && !shutdown.signal.aborted) spawn(id);
    }, retry.delay);
  }

  async function runSession(id: string, task: Task): Promise<void> {
    if (!(await acquire(id))) return;
    try {
      // Every round re-reads the session: it ends when the session is no longer active, and a
      // resume or force-resume during a round simply makes the next round run the pending inputs.
      while (!shutdown.signal.aborted && !task.lost) {
        task.again = false;
        task.run = new AbortController();
        const { sessionStatus, inputs } = await runnableInputs(sql, id);
        if (sessionStatus !== 'active') break;
        if (inputs.length === 0) {
          if (await completeSession(sql, id)) log(`import ${id}: active → done`);
          break;
        }
        const { failure, progressed } = await runAll(id, inputs, task.run);
        if (shutdown.signal.aborted || task.lost) break;
        if (failure && (await failSession(sql, id, failure))) log(`import ${id}: active → error (${failure.message})`);
        if (!progressed) await Bun.sleep(100);
      }
    } finally {
      await locks.unlock(id).catch(() => {});
    }
  }

  /** Waits for the session's lock: a crashed predecessor's backend may take a moment to go. */
  async function acquire(id: string): Promise<boolean> {
    for (let attempt = 0; !shutdown.signal.aborted; attempt++) {
      if (await locks.tryLock(id)) return true;
      if (attempt === 0) log(`import ${id}: held by another server process; waiting for it`);
      await Bun.sleep(LOCK_RETRY_MS);
      const { sessionStatus } = await runnableInputs(sql, id);
      if (sessionStatus !== 'active') return false;
    }
    return false;
  }

  /** Runs the inputs, N at a time; the first failure stops the others (it ends the session). */
  async function runAll(
    id: string,
    inputs: Awaited<ReturnType<typeof runnableInputs>>['inputs'],
    run: AbortController,
  ): Promise<{ failure?: { idx: number; message: string }; progressed: boolean }> {
    const [found] = await sql`select (resource->>'update')::boolean as update from bulkimportstatus where id = ${id}`;
    const queue = [...inputs];
    let failure: { idx: number; message: string } | undefined;
    let progressed = false;
    const signal = AbortSignal.any([run.signal, shutdown.signal]);
    const worker = async () => {
      for (let input = queue.shift(); input && !signal.aborted; input = queue.shift()) {
        const outcome: InputOutcome = await runInput({ sql, config, sessionId: id, update: found?.update === true, input, signal });
        if (outcome.kind === 'done') progressed = true;
        if (outcome.kind === 'done' || outcome.kind === 'stopped') continue;
        if (outcome.kind === 'failed') failure ??= { idx: input.idx, message: outcome.message };
        if (outcome.kind === 'crashed' && !shutdown.signal.aborted) {
          const error = outcome.error;
          log(`import ${id}: ${inputLabel(input)} failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
          failure ??= { idx: input.idx, message: `${inputLabel(input)}: internal error while writing a batch; the server log has the details` };
        }
        run.abort('failed');
      }
    };
    await Promise.all(Array.from({ length: Math.min(config.importConcurrency, queue.length) }, worker));
    return { failure, progressed: progressed || failure !== undefined };
  }

  return {
    async start() {
      const active = await activeSessionIds(sql);
      const keep = new Set<string>();
      for (const id of active) for (const { idx } of (await runnableInputs(sql, id)).inputs) keep.add(stagingName(id, idx));
      await dropOrphanStaging(sql, STAGING_PREFIX, keep);
      for (const id of active) {
        log(`import ${id}: resuming from its checkpoints`);
        spawn(id);
      }
    },
    async stop() {
      shutdown.abort('shutdown');
      for (const { timer } of retries.values()) clearTimeout(timer);
      for (const id of tasks.keys()) log(`import ${id}: stopping with the server; stays active and resumes on the next start`);
      const all = Promise.all([...tasks.values()].map((t) => t.done));
      await Promise.race([all, Bun.sleep(STOP_WAIT_MS)]);
      await locks.close().catch(() => {});
    },
    notify(id, state, options = {}) {
      if (shutdown.signal.aborted) return;
      const task = tasks.get(id);
      if (state !== 'active') {
        task?.run.abort(state);
        return;
      }
      if (!task) return spawn(id);
      task.again = true;
      if (options.restart) task.run.abort('force-resume');
    },
  };
}
