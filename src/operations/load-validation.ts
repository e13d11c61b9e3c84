/**
 * `validation.enable: async` of `$load` (SPEC §7): everything is loaded first; then the staged rows
 * are validated in the background and the findings stored as an OperationOutcome, fetched with
 * `GET /OperationOutcome/<id>` (the id the load's response gives). issue[0] carries the status
 * (`running` → `done` or `failed`) in `details.coding`; the following issues are the invalid lines.
 * The loaded resources stay loaded: async validation reports, it does not undo.
 */
import type { OperationContext } from './context.ts';
import type { Json } from '../fhir/resource.ts';
import { validateStruct } from '../fhir/validate.ts';
import { dropStaging } from '../storage/staging.ts';
import { checkStagingRefs, countStaging, markStagingErrors, readStaging, stagingErrors, type LineError } from '../storage/staging-check.ts';
import { writeResource } from '../storage/resources.ts';

export const VALIDATION_STATUS_SYSTEM = 'urn:fhirhose:load-validation-status';
/** At most this many invalid lines are listed in the stored OperationOutcome; `diagnostics` of issue[0] gives the count. */
export const STORED_ERROR_LIMIT = 1000;
const BATCH = 1000;

type Checks = 'struct' | 'refs' | 'all';

function statusIssue(status: 'running' | 'done' | 'failed', diagnostics: string): Record<string, Json> {
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

/** Starts the background validation; never throws (a failure is stored as status `failed`). */
export function validateLater(
  ctx: OperationContext,
  job: { table: string; keep: boolean; checks: Checks; outcomeId: string; sourceName: string },
): void {
  const store = (outcome: Record<string, Json>) =>
    ctx.sql.begin((tx) => writeResource(tx, 'OperationOutcome', job.outcomeId, outcome));
  // The scratch table is dropped before the final outcome is stored: whoever sees `done` sees it gone.
  const drop = () => (job.keep ? Promise.resolve() : dropStaging(ctx.sql, job.table));
  void (async () => {
    try {
      const { checked, errors, errorCount } = await validate(ctx, job.table, job.checks);
      const summary = errorCount === 0
        ? `Validated ${checked} resources loaded from "${job.sourceName}" (checks: ${job.checks}): all valid`
        : `Validated ${checked} resources loaded from "${job.sourceName}" (checks: ${job.checks}): ${errorCount} invalid` +
          (errorCount > errors.length ? `, the first ${errors.length} listed` : '');
      await drop();
      await store({
        issue: [
          statusIssue('done', summary),
          ...errors.map((e) => ({ severity: 'error', code: 'invalid', diagnostics: `line ${e.line}: ${e.message}` })),
        ],
      });
    } catch (err) {
      ctx.log(`async validation ${job.outcomeId} failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
      await drop().catch(() => {});
      await store({ issue: [statusIssue('failed', `Validation of "${job.sourceName}" failed; the server log has the details`)] }).catch(() => {});
    }
  })();
}

async function validate(ctx: OperationContext, table: string, checks: Checks): Promise<{ checked: number; errors: LineError[]; errorCount: number }> {
  let checked = 0;
  if (checks !== 'refs') {
    for await (const rows of readStaging(ctx.sql, table, { batch: BATCH })) {
      const found: LineError[] = [];
      for (const row of rows) {
        const problem = validateStruct({ resourceType: row.type, id: row.id, ...row.resource });
        if (problem !== null) found.push({ line: row.line, message: problem });
      }
      checked += rows.length;
      await markStagingErrors(ctx.sql, table, found);
    }
  }
  if (checks !== 'struct') {
    const result = await checkStagingRefs(ctx.sql, table, { limit: STORED_ERROR_LIMIT });
    if (checks === 'refs') checked = await countStaging(ctx.sql, table);
    return { checked, errors: result.errors, errorCount: result.errorCount };
  }
  const result = await stagingErrors(ctx.sql, table, { limit: STORED_ERROR_LIMIT });
  return { checked, errors: result.errors, errorCount: result.errorCount };
}
