/**
 * What a job kind sees (SPEC §11, STYLE "Growing the house"): its job and a signal. A kind is a
 * function `(job, signal) → outcome` in a module of its own; it commits its work through
 * `job.commit`, and nothing in it knows about leases: the runner fences every commit on the claim.
 */
import type { Config } from '../config.ts';
import type { Sql, TransactionSql } from '../storage/db.ts';

export interface Job<P = Record<string, unknown>> {
  readonly id: string;
  readonly kind: string;
  readonly key: string;
  readonly payload: P;
  /** Which claim of the job this is; names scratch tables, so two claims never share one. */
  readonly epoch: number;
  /** How far committed work got (0 for a new job). */
  readonly checkpoint: number;
  /** Failed runs in a row before this one. */
  readonly attempts: number;
  /**
   * Runs `work` as ONE transaction and records `checkpoint` (when given) with it. If this server no
   * longer holds the job (another claimed it, or it was handed over), nothing is committed and the
   * run is ended: the error thrown must be let through.
   */
  commit<T>(work: (tx: TransactionSql) => Promise<{ value: T; checkpoint?: number }>): Promise<T>;
}

/**
 * done: the work is finished (the runner marks the job done). stopped: it stopped at a batch
 * boundary (signal, or the work's own state said so); the runner hands it back. A throw is a
 * failed run, tried again later (1, 2, 4 … 60 s).
 */
export type JobOutcome = 'done' | 'stopped';

export interface JobKind<P = any> {
  name: string;
  /** A label for log lines, e.g. `import imp-1`. */
  describe(job: Job<P>): string;
  /** At most this many jobs of one group (e.g. one session's inputs) at once on one server. */
  groupLimit?: number;
  run(job: Job<P>, signal: AbortSignal): Promise<JobOutcome>;
  /** Called at start and now and then: drops scratch left by claims that died. */
  sweep?(): Promise<void>;
}

/** What a kind is built with. */
export interface KindDeps {
  /** The job pool: statement and idle-in-transaction timeouts set (see server.ts). */
  sql: Sql;
  /** The bulk pool, for reads one statement of which may run for minutes ($export's COPYs). */
  bulkSql?: Sql;
  config: Config;
  log: (line: string) => void;
}
