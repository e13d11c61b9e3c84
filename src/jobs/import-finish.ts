/**
 * The two moves the runner makes itself (SPEC §8): `active → error` when an input's source fails,
 * `active → done` when every input is done. Each locks the session row like an action does, and
 * changes nothing unless the session is still `active` (a pause or abort may have come first).
 */
import type { Sql } from '../storage/db.ts';
import { lockSession, writeSession } from '../storage/import-sessions.ts';
import { allInputsDone, failInput, parkInputs } from '../storage/import-inputs.ts';
import { moved } from '../operations/import-actions.ts';

/** Puts the session in `error` with the input's message; false if it was no longer active. */
export async function failSession(sql: Sql, id: string, failure: { idx: number; message: string }): Promise<boolean> {
  return sql.begin(async (tx) => {
    const row = await lockSession(tx, id);
    if (!row || row.resource.status !== 'active') return false;
    await failInput(tx, id, failure.idx, failure.message);
    await parkInputs(tx, id);
    await writeSession(tx, id, moved(row.resource, 'error', failure.message));
    return true;
  });
}

/** `done` once no input is left unfinished; false if not (yet) or no longer active. */
export async function completeSession(sql: Sql, id: string): Promise<boolean> {
  return sql.begin(async (tx) => {
    const row = await lockSession(tx, id);
    if (!row || row.resource.status !== 'active') return false;
    if (!(await allInputsDone(tx, id))) return false;
    await writeSession(tx, id, moved(row.resource, 'done'));
    return true;
  });
}
