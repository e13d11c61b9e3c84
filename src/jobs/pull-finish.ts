/**
 * The ends of a pull (SPEC §13): the session fails with the other server's message, or, once
 * every file is read, the export there is deleted (the IG: a client may DELETE the status URL
 * after reading the files, so the other server can free them). And which credential a session's
 * files get: the session's, unless its manifest said `requiresAccessToken: false`.
 */
import type { Config } from '../config.ts';
import type { AnySql, TransactionSql } from '../storage/db.ts';
import { lockSession, writeSession } from '../storage/import-sessions.ts';
import { pullJobKey, readPull } from '../storage/import-pulls.ts';
import { readCredential, type SourceCredential } from '../storage/import-credentials.ts';
import { setGroupState } from '../storage/jobs.ts';
import { publish } from '../storage/notify.ts';
import { moved } from '../operations/import-actions.ts';
import { displayUrl } from '../streams/outbound.ts';
import { deleteRemote } from './pull-remote.ts';

/**
 * The session goes to `error` with `message` (never a credential: pull-remote.ts scrubs them), in
 * `tx`; its pull job fails. False if it was no longer active. A force-resume polls again (or, if
 * the kick-off was refused, kicks off again).
 */
export async function failPull(tx: TransactionSql, id: string, message: string): Promise<boolean> {
  const row = await lockSession(tx, id);
  if (!row || row.resource.status !== 'active') return false;
  await setGroupState(tx, id, { from: ['ready'], to: 'failed', only: [pullJobKey(id)] });
  await writeSession(tx, id, moved(row.resource, 'error', message));
  await publish(tx, 'fhirhose_actions', id);
  return true;
}

/** The credential for the session's input files, if they get one. */
export async function fileCredential(sql: AnySql, id: string): Promise<SourceCredential | undefined> {
  const credential = await readCredential(sql, id);
  return credential && credential.files !== false ? credential : undefined;
}

export interface PulledExport {
  statusUrl: string;
  credential?: SourceCredential;
}

/** The other server's export this session read, with the credential (read before the session ends and drops it). */
export async function pulledExport(sql: AnySql, id: string): Promise<PulledExport | undefined> {
  const pull = await readPull(sql, id);
  if (!pull || pull.statusUrl === null) return undefined;
  return { statusUrl: pull.statusUrl, credential: await readCredential(sql, id) };
}

/** DELETE on the other server's status URL; best effort: its export expires there anyway. */
export async function releaseRemote(pulled: PulledExport, config: Pick<Config, 'sources'>, log: (line: string) => void, id: string): Promise<void> {
  const status = await deleteRemote(pulled.statusUrl, { limits: config.sources, credential: pulled.credential });
  log(`import ${id}: deleted the pulled export at ${displayUrl(new URL(pulled.statusUrl))} (${status === undefined ? 'no answer' : `HTTP ${status}`})`);
}
