/**
 * What one `$import` input is given to work with and how it ends: the types shared by
 * jobs/import-input.ts (which streams the source) and jobs/import-batch.ts (which commits its
 * batches), kept here so neither imports the other's module for them.
 */
import type { Config } from '../config.ts';
import type { InputRow } from '../storage/import-sessions.ts';
import type { Job } from './job.ts';

export interface InputJob {
  config: Pick<Config, 'importRoot' | 'importBatchLines' | 'maxLineBytes' | 'sources'>;
  sessionId: string;
  update: boolean;
  input: InputRow;
  /** Aborted on shutdown, pause, abort or force-resume: stop reading now, commit nothing more. */
  signal: AbortSignal;
  /** The job's fenced commit (runner.ts): one transaction, the checkpoint recorded with it. */
  commit: Job['commit'];
}

/**
 * done: the source ended and its last batch is committed. stopped: the session left `active`, the
 * signal fired, or another worker owns the input. failed: the source could not be read (the
 * message names the input); crashed: a database error.
 */
export type InputOutcome =
  | { kind: 'done' }
  | { kind: 'stopped' }
  | { kind: 'failed'; message: string }
  | { kind: 'crashed'; error: unknown };
