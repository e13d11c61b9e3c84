/**
 * `validation.enable: async` of `$load` (SPEC §7): everything is loaded first; then the staged rows
 * are validated in the background (a `validation` job, jobs/validation.ts: any server, survives a
 * restart) and the findings stored as an OperationOutcome, fetched with
 * `GET /OperationOutcome/<id>` (the id the load's response gives). issue[0] carries the status
 * (`running` → `done` or `failed`) in `details.coding`; the following issues are the invalid lines.
 * The loaded resources stay loaded: async validation reports, it does not undo.
 */
import type { Json } from '../fhir/resource.ts';
import type { TransactionSql } from '../storage/db.ts';
import { insertJob } from '../storage/jobs.ts';
import { publish } from '../storage/notify.ts';

export const VALIDATION_STATUS_SYSTEM = 'urn:fhirhose:load-validation-status';
/** At most this many invalid lines are listed in the stored OperationOutcome; `diagnostics` of issue[0] gives the count. */
export const STORED_ERROR_LIMIT = 1000;

type Checks = 'struct' | 'refs' | 'all';

export function statusIssue(status: 'running' | 'done' | 'failed', diagnostics: string): Record<string, Json> {
  return {
    severity: status === 'failed' ? 'error' : 'information',
    code: status === 'failed' ? 'exception' : 'informational',
    details: { coding: [{ system: VALIDATION_STATUS_SYSTEM, code: status }], text: status },
    diagnostics,
  };
}

/** The stored OperationOutcome while the validation runs (written in the load's transaction). */
export function runningOutcome(sourceName: string, total: number, checks: Checks): Record<string, Json> {
  return { issue: [statusIssue('running', `Validating ${total} resources loaded from "${sourceName}" (checks: ${checks})`)] };
}

/** What the `validation` job carries (jobs/validation.ts runs it). */
export interface ValidationJob {
  table: string;
  /** `temp_table` was given: the table stays, with the reasons in its `error` column. */
  keep: boolean;
  checks: Checks;
  outcomeId: string;
  sourceName: string;
}

/** Queues the background validation inside the load's transaction: it exists iff the load committed. */
export async function validateLater(tx: TransactionSql, job: ValidationJob): Promise<void> {
  await insertJob(tx, { kind: 'validation', key: `validation:${job.outcomeId}`, payload: { ...job } });
  await publish(tx, 'fhirhose_jobs', job.outcomeId);
}
