/**
 * `validation.enable: async` of `$load` (SPEC §7) as a job kind (SPEC §11): the load commits its
 * resources, its staging table and a `validation` job in one transaction; any server then checks
 * the staged rows and stores the findings in the OperationOutcome the load's answer points to.
 * The schema check pages through the table by line number and records each page's marks with the
 * line as the job's checkpoint, so a server that dies hands over a half-checked table and the next
 * claim goes on from there. The final outcome and the drop of the scratch table are one commit:
 * whoever sees `done` sees the table gone, and a table that is gone means the job is finished.
 */
import type { Json } from '../fhir/resource.ts';
import { dropStaging } from '../storage/staging.ts';
import {
  checkStagingRefs, countStaging, indexStagingLines, markStagingErrors, readStagingPage, stagingErrors, stagingExists,
  type LineError,
} from '../storage/staging-check.ts';
import { writeResource } from '../storage/resources.ts';
import type { TransactionSql } from '../storage/db.ts';
import { STORED_ERROR_LIMIT, statusIssue, type ValidationJob } from '../operations/load-validation.ts';
import { validateStructs } from '../operations/struct-check.ts';
import type { JobKind, KindDeps } from './job.ts';

const PAGE = 1000;
/** After this many failed runs in a row the outcome says `failed` and the job ends. */
const MAX_ATTEMPTS = 4;

export function validationKind(deps: KindDeps): JobKind<ValidationJob> {
  const { sql, log } = deps;
  return {
    name: 'validation',
    describe: (job) => `async validation ${job.payload.outcomeId}`,
    async run(job, signal) {
      const p = job.payload;
      // Gone: a previous claim stored the outcome and dropped the table in one commit.
      if (!p.keep && !(await stagingExists(sql, p.table))) return 'done';
      if (job.attempts >= MAX_ATTEMPTS) {
        await job.commit(async (tx) => {
          if (!p.keep) await dropStaging(tx, p.table);
          await store(tx, p, { issue: [statusIssue('failed', `Validation of "${p.sourceName}" failed; the server log has the details`)] });
          return { value: undefined };
        });
        log(`async validation ${p.outcomeId}: gave up after ${job.attempts} failed runs`);
        return 'done';
      }
      if (job.checkpoint > 0) log(`async validation ${p.outcomeId}: resuming after line ${job.checkpoint}`);
      if (p.checks !== 'refs') {
        await indexStagingLines(sql, p.table);
        for (let after = job.checkpoint; ;) {
          if (signal.aborted) return 'stopped';
          const rows = await readStagingPage(sql, p.table, { afterLine: after, limit: PAGE });
          if (rows.length === 0) break;
          const problems = await validateStructs(rows.map((row) => ({ resourceType: row.type, id: row.id, ...row.resource })));
          const found: LineError[] = [];
          for (const [i, row] of rows.entries()) {
            const problem = problems[i];
            if (problem) found.push({ line: row.line, message: problem });
          }
          after = rows[rows.length - 1]!.line;
          await job.commit(async (tx) => {
            await markStagingErrors(tx, p.table, found);
            return { value: undefined, checkpoint: after };
          });
        }
      }
      if (signal.aborted) return 'stopped';
      await job.commit(async (tx) => {
        // the references check is one statement over the whole table: not bound by the job pool's timeout
        await tx`set local statement_timeout = 0`;
        const result = p.checks === 'struct'
          ? await stagingErrors(tx, p.table, { limit: STORED_ERROR_LIMIT })
          : await checkStagingRefs(tx, p.table, { limit: STORED_ERROR_LIMIT });
        const checked = await countStaging(tx, p.table);
        const summary = result.errorCount === 0
          ? `Validated ${checked} resources loaded from "${p.sourceName}" (checks: ${p.checks}): all valid`
          : `Validated ${checked} resources loaded from "${p.sourceName}" (checks: ${p.checks}): ${result.errorCount} invalid` +
            (result.errorCount > result.errors.length ? `, the first ${result.errors.length} listed` : '');
        if (!p.keep) await dropStaging(tx, p.table);
        await store(tx, p, {
          issue: [
            statusIssue('done', summary),
            ...result.errors.map((e) => ({ severity: 'error', code: 'invalid', diagnostics: `line ${e.line}: ${e.message}` })),
          ],
        });
        return { value: undefined };
      });
      return 'done';
    },
  };
}

async function store(tx: TransactionSql, p: ValidationJob, outcome: Record<string, Json>): Promise<void> {
  await writeResource(tx, 'OperationOutcome', p.outcomeId, outcome);
}
