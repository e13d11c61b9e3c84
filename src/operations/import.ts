/**
 * `POST /$import` and `GET /BulkImportStatus[/<id>]` (SPEC §8). An action is checked in the order
 * a user can act on: malformed (400) → unknown id (404) → wrong secret (403) → not allowed in the
 * session's state (406); then the move is one transaction on the locked session row.
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { OperationContext } from './context.ts';
import { parseImportRequest, type ImportInputRequest, type ImportRequest } from './import-request.ts';
import { inputStatesFor, jobStatesFor, moved, transition } from './import-actions.ts';
import { sessionView, type SessionView } from './import-view.ts';
import { inputSizes } from './import-sizes.ts';
import { hashSecret, verifySecret } from '../auth/secrets.ts';
import { OperationOutcomeError, forbidden, invalid, notFound } from '../fhir/outcome.ts';
import { resolveImportPath } from '../streams/source.ts';
import { checkDestination } from '../streams/outbound.ts';
import {
  insertSession, listSessions, lockSession, readSession, secretHashOf, setInputStatus, writeSession,
  type NewInput, type SessionResource,
} from '../storage/import-sessions.ts';
import { setGroupState } from '../storage/jobs.ts';
import type { TransactionSql } from '../storage/db.ts';
import { publish } from '../storage/notify.ts';
import { dropCredential, saveCredential, type SourceCredential } from '../storage/import-credentials.ts';

/**
 * What the operation needs of this server's job runner: a nudge to look for work now. Every other
 * server learns of the change through NOTIFY (sent by the action's transaction, on commit).
 */
export interface ImportNotifier {
  wake(): void;
}

export interface ImportAnswer {
  status: 200 | 201;
  session: SessionView;
  headers: Record<string, string>;
}

export async function importAction(ctx: OperationContext, runner: ImportNotifier, body: unknown): Promise<ImportAnswer> {
  const request = parseImportRequest(body);
  if (request.action === 'start') return startImport(ctx, runner, request);
  const id = request.id!;
  const action = request.action;
  if (!(await readSession(ctx.sql, id))) throw notFound(`Import session "${id}" not found`);
  const hash = await secretHashOf(ctx.sql, id);
  if (hash !== undefined && (request.secret === undefined || !(await verifySecret(request.secret, hash)))) {
    throw forbidden(`The secret does not match import session "${id}"'s secret`);
  }
  const { from, to } = await ctx.sql.begin(async (tx) => {
    const row = await lockSession(tx, id);
    if (!row) throw notFound(`Import session "${id}" not found`);
    const move = transition(action, row.resource.status);
    if (!move.ok) throw new OperationOutcomeError('not-acceptable', move.message);
    await setInputStatus(tx, id, { ...inputStatesFor(action), clearMessage: action === 'force-resume' });
    await setGroupState(tx, id, jobStatesFor(action));
    await writeSession(tx, id, moved(row.resource, move.to));
    if (move.to === 'aborted') await dropCredential(tx, id); // SPEC §13: no longer needed
    // actions: the servers running the inputs re-check them now; jobs: new claimable work
    await publish(tx, 'fhirhose_actions', id);
    if (move.to === 'active') await publish(tx, 'fhirhose_jobs', id);
    return { from: row.resource.status, to: move.to };
  });
  ctx.log(`import ${id}: ${from} → ${to}${from === to ? ` (${action})` : ''}${by(ctx)}`);
  runner.wake();
  return { status: 200, session: await readImportSession(ctx, id), headers: {} };
}

export async function readImportSession(ctx: OperationContext, id: string): Promise<SessionView> {
  const found = await readSession(ctx.sql, id);
  if (!found) throw notFound(`BulkImportStatus/${id} not found`);
  return sessionView(found.session, found.inputs);
}

export async function listImportSessions(ctx: OperationContext): Promise<SessionView[]> {
  const now = Date.now();
  return (await listSessions(ctx.sql)).map(({ session, inputs }) => sessionView(session, inputs, now));
}

/**
 * A new session (the Aidbox body, or a FHIR Parameters body: import-parameters.ts). `credential`
 * (SPEC §13) is stored beside the session, never in it, in the transaction that creates it.
 */
export async function startImport(
  ctx: OperationContext,
  runner: ImportNotifier,
  request: ImportRequest,
  options: {
    credential?: SourceCredential;
    /** More rows to create in the session's own transaction (a pull: storage/import-pulls.ts). */
    prepare?: (tx: TransactionSql, id: string) => Promise<void>;
    /** Inputs taken as they are, after the request's (a manifest's `deleted` files). */
    extraInputs?: NewInput[];
  } = {},
): Promise<ImportAnswer> {
  const id = request.id ?? crypto.randomUUID();
  const inputs: NewInput[] = [];
  for (const [i, input] of request.inputs.entries()) inputs.push(await locate(ctx, input, i));
  inputs.push(...(options.extraInputs ?? []));
  const sizes = await inputSizes(inputs.map((i) => i.source), ctx.config.sources, options.credential);
  for (const [i, size] of sizes.entries()) if (size !== undefined) inputs[i]!.bytesTotal = size;
  const resource: SessionResource = {
    status: 'active',
    inputFormat: request.inputFormat,
    ...(request.inputSource !== undefined && { inputSource: request.inputSource }),
    ...(request.contentEncoding !== undefined && { contentEncoding: request.contentEncoding }),
    update: request.update,
    startedAt: new Date().toISOString(),
    activeMs: 0,
    activeSince: new Date().toISOString(),
    // Every size known before the first byte: progress is weighed by bytes for the whole session.
    sized: sizes.every((size) => size !== undefined && size > 0),
  };
  const secretHash = request.secret === undefined ? undefined : await hashSecret(request.secret);
  const created = await ctx.sql.begin(async (tx) => {
    if (!(await insertSession(tx, id, { resource, inputs, secretHash }))) return false;
    if (options.credential) await saveCredential(tx, id, options.credential);
    await options.prepare?.(tx, id);
    await publish(tx, 'fhirhose_jobs', id);
    return true;
  });
  if (!created) throw new OperationOutcomeError('conflict', `Import session "${id}" already exists; use another id, or an action such as resume`);
  ctx.log(`import ${id}: new → active (${inputs.length} input${inputs.length === 1 ? '' : 's'})${by(ctx)}`);
  runner.wake();
  const location = `/BulkImportStatus/${id}`;
  return { status: 201, session: await readImportSession(ctx, id), headers: { 'Content-Location': location } };
}

/**
 * Where the runner will read an input. File sources are confined to FHIRHOSE_IMPORT_ROOT here, at
 * start: a path outside it is a 403 and no session is created (SPEC §1). A file that does not
 * exist yet is not refused: it fails the session when read, and force-resume can retry it.
 */
async function locate(ctx: OperationContext, input: ImportInputRequest, i: number): Promise<NewInput> {
  const base = { type: input.type, url: input.url, storage: input.storage };
  if (input.storage === 'url' && /^https?:\/\//i.test(input.url)) {
    let url: URL;
    try {
      url = new URL(input.url);
    } catch {
      throw invalid(`Invalid $import request: inputs[${i}].url "${input.url}" is not a valid URL`);
    }
    // Refused now rather than when read (SPEC §10); a DNS failure is left to the runner to report.
    await checkDestination(url, ctx.config.sources, (what) => `inputs[${i}]: ${what}`).catch((error: unknown) => {
      if (error instanceof OperationOutcomeError && error.code === 'forbidden') throw error;
    });
    return { ...base, source: input.url };
  }
  let local = input.url;
  if (input.storage === 'url' && /^file:\/\//i.test(local)) {
    try {
      local = fileURLToPath(local);
    } catch {
      throw invalid(`Invalid $import request: inputs[${i}].url "${input.url}" is not a local file URL`);
    }
  }
  try {
    return { ...base, source: await resolveImportPath(local, ctx.config.importRoot) };
  } catch (error) {
    if (error instanceof OperationOutcomeError && error.code === 'not-found') {
      return { ...base, source: path.resolve(ctx.config.importRoot, local) };
    }
    if (error instanceof OperationOutcomeError) {
      throw new OperationOutcomeError(error.code, `inputs[${i}]: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/** Who changed a session, for the log: ` by client <id>`, or nothing outside a request. */
function by(ctx: OperationContext): string {
  return ctx.caller ? ` by client ${ctx.caller.clientId}` : '';
}
