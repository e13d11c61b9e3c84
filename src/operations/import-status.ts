/**
 * The status URL of an import started with a `Parameters` body (SPEC §13), in the Bulk Data async
 * pattern: `202` + `X-Progress` + `Retry-After` while it runs (or is paused), `200` with a manifest
 * once it ended (`done`, or `error`: the errors are in `error`/`outcome`), `404` once aborted (what
 * `DELETE` does) or unknown. The session itself is the `extension`, as `/BulkImportStatus/<id>`.
 */
import type { OperationContext } from './context.ts';
import { importAction, readImportSession, type ImportNotifier } from './import.ts';
import type { SessionView } from './import-view.ts';
import { OperationOutcomeError, notFound } from '../fhir/outcome.ts';

export interface ImportStatusAnswer {
  status: 200 | 202;
  headers: Record<string, string>;
  body?: Record<string, unknown>;
}

export async function importStatus(ctx: OperationContext, id: string): Promise<ImportStatusAnswer> {
  const session = await readImportSession(ctx, id).catch((error: unknown) => {
    if (error instanceof OperationOutcomeError && error.code === 'not-found') throw notFound(`Import "${id}" not found`);
    throw error;
  });
  if (session.status === 'aborted') throw notFound(`Import "${id}" was aborted`);
  if (session.status === 'active' || session.status === 'paused') {
    const percent = Math.floor(session.progress * 100);
    return {
      status: 202,
      headers: { 'X-Progress': `${percent}% ${session.status === 'paused' ? 'paused' : doing(session)}`, 'Retry-After': String(retryAfter(session)) },
    };
  }
  return { status: 200, headers: {}, body: manifest(session) };
}

/** `DELETE` on the status URL: the session is aborted (then the status URL is 404). */
export async function abortImport(ctx: OperationContext, runner: ImportNotifier, id: string): Promise<void> {
  await readImportSession(ctx, id).catch((error: unknown) => {
    if (error instanceof OperationOutcomeError && error.code === 'not-found') throw notFound(`Import "${id}" not found`);
    throw error;
  });
  await importAction(ctx, runner, { id, action: 'abort' });
}

/** What a running session is doing, for X-Progress: waiting for the other server, or importing. */
function doing(session: SessionView): string {
  const pull = session.pull;
  if (pull && pull.state !== 'listed') {
    const remote = pull.remoteProgress ? `: ${pull.remoteProgress}` : '';
    return `waiting for the export at ${new URL(pull.exportUrl).origin} (${pull.state}${remote})`;
  }
  return `imported ${session.imported}`;
}

function manifest(session: SessionView): Record<string, unknown> {
  const perType = new Map<string, { count: number; urls: string[] }>();
  // a manifest's `deleted` files: `count` is the resources they deleted here
  const deleted = session.inputs.filter((input) => input.storageDetail.type === 'deleted')
    .map((input) => ({ type: input.type ?? 'Bundle', count: input.imported, url: input.url }));
  for (const input of session.inputs) {
    if (input.storageDetail.type === 'deleted') continue;
    const type = input.type ?? 'Resource';
    const entry = perType.get(type) ?? { count: 0, urls: [] };
    entry.count += input.imported;
    entry.urls.push(input.url);
    perType.set(type, entry);
  }
  const output = [...perType].map(([type, { count, urls }]) => ({ type, count, ...(urls.length === 1 && { url: urls[0] }) }));
  const error = session.inputs
    .filter((input) => input.errorCount > 0 || input.message !== undefined)
    .map((input) => ({
      type: input.type ?? 'Resource',
      count: input.errorCount,
      url: input.url,
      ...(input.message !== undefined && { message: input.message }),
      ...(input.errors.length > 0 && { lines: input.errors }),
    }));
  // a session that failed before any input did (a pull whose export failed there): its own message
  if (session.message !== undefined && !error.some((e) => e.message === session.message)) {
    error.push({ type: 'OperationOutcome', count: 0, url: session.pull?.exportUrl ?? '$import', message: session.message });
  }
  return {
    // a pull's data is the other server's as of its transactionTime
    transactionTime: session.pull?.transactionTime ?? session.startedAt,
    request: '$import',
    requiresAccessToken: false,
    output,
    deleted,
    error,
    outcome: error,
    extension: session,
  };
}

/** Whole seconds, 1–60: the remaining time when known (a quarter of it), else 2. */
function retryAfter(session: SessionView): number {
  if (session.etaSeconds === undefined) return 2;
  return Math.min(60, Math.max(1, Math.round(session.etaSeconds / 4)));
}
