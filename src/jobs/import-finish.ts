/**
 * The two moves the runner makes itself (SPEC §8): `active → error` when an input's source fails,
 * `active → done` when every input is done. Each locks the session row like an action does, and
 * changes nothing unless the session is still `active` (a pause or abort may have come first).
 */
import type { Sql, TransactionSql } from '../storage/db.ts';
import { inputJobKey, lockSession, writeSession } from '../storage/import-sessions.ts';
import { allInputsDone, failInput, parkInputs } from '../storage/import-inputs.ts';
import { setGroupState } from '../storage/jobs.ts';
import { publish } from '../storage/notify.ts';
import { dropCredential } from '../storage/import-credentials.ts';
import { pullPending } from '../storage/import-pulls.ts';
import { moved } from '../operations/import-actions.ts';

/**
 * Puts the session in `error` with the input's message, inside `tx` (the failing input's fenced
 * commit); false if it was no longer active. The input's job fails, its siblings' are held until a
 * force-resume, and the servers running them are told at once.
 */
export async function failSession(tx: TransactionSql, id: string, failure: { idx: number; message: string }): Promise<boolean> {
  const row = await lockSession(tx, id);
  if (!row || row.resource.status !== 'active') return false;
  await failInput(tx, id, failure.idx, failure.message);
  await parkInputs(tx, id, `stopped when inputs[${failure.idx}] failed`);
  await setGroupState(tx, id, { from: ['ready'], to: 'failed', only: [inputJobKey(id, failure.idx)] });
  await setGroupState(tx, id, { from: ['ready'], to: 'held' });
  await writeSession(tx, id, moved(row.resource, 'error', failure.message));
  await publish(tx, 'fhirhose_actions', id);
  return true;
}

/** `done` once no input is left unfinished; false if not (yet) or no longer active. */
export async function completeSession(sql: Sql, id: string): Promise<boolean> {
  return sql.begin(async (tx) => {
    const row = await lockSession(tx, id);
    if (!row || row.resource.status !== 'active') return false;
    if (!(await allInputsDone(tx, id))) return false;
    if (await pullPending(tx, id)) return false; // a pull's files are not listed yet (SPEC §13)
    await writeSession(tx, id, moved(row.resource, 'done'));
    // the console's live view (SPEC §14) re-reads the session: the last batch's own notification
    // may have been read before this move committed
    await publish(tx, 'fhirhose_progress', id);
    await dropCredential(tx, id); // SPEC §13: kept only as long as the session needs it
    return true;
  });
}
