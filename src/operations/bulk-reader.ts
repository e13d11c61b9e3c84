/**
 * Which database a bulk read ($dump, $dump-sql, $export) runs on (SPEC §11). Without
 * `FHIRHOSE_READ_URL`, the primary. With it, the standby, once it has replayed every write the
 * primary had committed when the request came: a dump through the replica is never older than
 * one from the primary would be. A standby that cannot be reached, or that does not catch up within
 * `FHIRHOSE_READ_MAX_LAG_MS`, is a 503 that says so, before any byte of the body. Writes never
 * come here: only the bulk read operations call `bulkReader`.
 */
import type { OperationContext } from './context.ts';
import type { Sql } from '../storage/db.ts';
import { connectionLost, pgCode, pgMessage } from '../storage/db.ts';
import { primaryPosition, replayState } from '../storage/replica.ts';
import { OperationOutcomeError } from '../fhir/outcome.ts';

const POLL_MS = 20;

export async function bulkReader(ctx: OperationContext): Promise<Sql> {
  const replica = ctx.replica;
  if (!replica) return ctx.sql;
  const target = await primaryPosition(ctx.sql);
  const deadline = Date.now() + replica.maxLagMs;
  for (;;) {
    let state;
    try {
      state = await replayState(replica.sql, target);
    } catch (err) {
      throw unavailable(`The read replica (FHIRHOSE_READ_URL) cannot be reached: ${pgMessage(err)}`, err);
    }
    if (state.caughtUp) return replica.sql;
    const left = deadline - Date.now();
    if (left <= 0) {
      throw unavailable(
        `The read replica (FHIRHOSE_READ_URL) is behind: it has replayed the WAL up to ${state.replayed}, and did not reach ` +
          `${target}, where the primary was when this request came, within FHIRHOSE_READ_MAX_LAG_MS (${replica.maxLagMs} ms); try again later`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(POLL_MS, left)));
  }
}

/**
 * An error of opening a read on the replica (the check passed, then the standby went away or
 * cancelled the query for recovery) as a 503; anything else as it was.
 */
export function replicaFailure(ctx: OperationContext, reader: Sql, err: unknown): unknown {
  if (reader !== ctx.sql && (connectionLost(err) || /^(08|57P)/.test(pgCode(err) ?? '') || pgCode(err) === '40001')) {
    return unavailable(`The read replica (FHIRHOSE_READ_URL) failed: ${pgMessage(err)}`, err);
  }
  return err;
}

function unavailable(message: string, cause?: unknown): OperationOutcomeError {
  return new OperationOutcomeError('unavailable', message, { cause, headers: { 'Retry-After': '5' } });
}
