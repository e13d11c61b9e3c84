/**
 * `$export` (SPEC §12, HL7 FHIR Bulk Data Access 3.0): kick-off, status, DELETE and file download
 * as plain functions. The work itself is the `export` job kind (jobs/export-job.ts), run by the
 * export runner from the job's row.
 *
 * Status codes: kick-off 202 (Content-Location = status URL); status 202 while running
 * (X-Progress "42% (…)", Retry-After 1–60 s), 200 + manifest when done (Expires), the job's own
 * 4xx/5xx + OperationOutcome when it failed, 404 once deleted or expired. Only the client that
 * started an export (or root) sees its status and files; anyone else gets 404, as if it did not
 * exist.
 */
import crypto from 'node:crypto';
import type { OperationContext } from './context.ts';
import { OperationOutcomeError, notFound, outcome, type OperationOutcome } from '../fhir/outcome.ts';
import { isPlainObject } from '../fhir/resource.ts';
import { ROOT_CLIENT } from '../auth/auth.ts';
import { readResource } from '../storage/resources.ts';
import { deleteExport, exportFile, exportFiles, insertExport, readExport, type ExportJobRow } from '../storage/exports.ts';
import { removeJobFiles, serveFile, type Served, type ServeRequest } from '../storage/files.ts';
import { exportParams, problem, rawParams, type Authorizer, type ExportParams, type KickOffInput } from './export-request.ts';
import { planParts } from './export-plan.ts';

export interface ExportCaller extends Authorizer {
  clientId: string;
}

export interface KickOffResult {
  id: string;
  statusUrl: string;
  /** Preference-Applied of the 202. */
  preferenceApplied: string;
}

/** Validates, stores the job row, and wakes the runner; nothing is read from the resources yet. */
export async function kickOff(
  ctx: OperationContext,
  caller: ExportCaller,
  input: KickOffInput & { requestUrl: string; base: string },
  wake: () => void,
): Promise<KickOffResult> {
  const raw = rawParams(input);
  if (input.level === 'system' && raw.patients.length) {
    raw.patients = [];
    problem(raw, 'Parameter "patient" applies to Patient- and Group-level exports only');
  }
  let members: string[] | undefined;
  if (input.level === 'group') members = await groupMembers(ctx, input.groupId!);
  const params = await exportParams(input, raw, caller);
  let patients: string[] | undefined = members;
  if (raw.patients.length) patients = await listedPatients(ctx, raw, members);
  if (patients !== undefined) params.patients = 'listed';
  const id = crypto.randomUUID();
  await insertExport(ctx.sql, {
    id,
    clientId: caller.clientId,
    level: input.level,
    request: input.requestUrl,
    params,
    parts: planParts(params),
    patients,
  });
  wake();
  const preferenceApplied = params.separateStatus ? 'respond-async, separate-export-status' : 'respond-async';
  return { id, statusUrl: `${input.base}/$export-status/${id}`, preferenceApplied };
}

/** The static members of a Group that are Patients, without `inactive` ones. */
async function groupMembers(ctx: OperationContext, groupId: string): Promise<string[]> {
  const row = await readResource(ctx.sql, 'Group', groupId);
  if (!row) throw notFound(`Group/${groupId} not found`);
  const member = isPlainObject(row.resource) ? row.resource.member : undefined;
  const ids = new Set<string>();
  for (const m of Array.isArray(member) ? member : []) {
    if (!isPlainObject(m) || m.inactive === true || !isPlainObject(m.entity)) continue;
    const ref = m.entity.reference;
    if (typeof ref === 'string' && /^Patient\/[A-Za-z0-9.-]{1,64}$/.test(ref)) ids.add(ref.slice('Patient/'.length));
  }
  return [...ids];
}

/** `patient` references: each must name an existing Patient, and a member when a Group is exported. */
async function listedPatients(ctx: OperationContext, raw: ReturnType<typeof rawParams>, members: string[] | undefined): Promise<string[]> {
  const ids: string[] = [];
  for (const ref of new Set(raw.patients)) {
    const m = /^Patient\/([A-Za-z0-9.-]{1,64})$/.exec(ref);
    if (!m) { problem(raw, `patient ${JSON.stringify(ref)} is not a reference of the form Patient/<id>`); continue; }
    const id = m[1]!;
    if (members && !members.includes(id)) { problem(raw, `patient ${ref} is not a member of the exported Group`); continue; }
    if (!members && !(await readResource(ctx.sql, 'Patient', id))) { problem(raw, `patient ${ref} does not exist`); continue; }
    ids.push(id);
  }
  return ids;
}

export type StatusAnswer =
  | { status: 202; headers: Record<string, string>; body?: undefined }
  | { status: 200; headers: Record<string, string>; body?: Manifest | OperationOutcome };

export interface Manifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: true;
  output: { type: string; url: string; count: number }[];
  deleted: { type: string; url: string; count: number }[];
  error: { type: string; url: string; count: number }[];
}

/** Seconds a client waits between polls: short for a small export, at most a minute. */
function retryAfter(job: ExportJobRow): number {
  return Math.min(60, Math.max(1, Math.ceil(job.total / 1_000_000)));
}

/**
 * The job if this caller may see it: 404 when there is none (deleted, expired, never existed),
 * 403 when another client started it (only that client and root see an export and its files).
 */
async function ownJob(ctx: OperationContext, caller: { clientId: string }, id: string): Promise<ExportJobRow> {
  let job: ExportJobRow | undefined;
  try {
    job = /^[A-Za-z0-9-]{1,64}$/.test(id) ? await readExport(ctx.sql, id) : undefined;
  } catch (err) {
    // the IG: a failed poll is not a failed export; `transient` tells the client to try again
    throw new OperationOutcomeError('unavailable', `The status of export ${id} could not be read just now; try again`, { cause: err, headers: { 'Retry-After': '5' } });
  }
  if (!job || (job.expiresIn !== null && job.expiresIn <= 0)) throw notFound(`Export ${id} not found (it was deleted, it expired, or it never existed)`);
  if (job.clientId !== caller.clientId && caller.clientId !== ROOT_CLIENT) {
    throw new OperationOutcomeError('forbidden', `Export ${id} belongs to another client; only that client (or root) may read or delete it`);
  }
  return job;
}

/**
 * The status of an export. With `Prefer: separate-export-status` at kick-off (Bulk Data 3.0), the
 * HTTP status is the poll's own (200) and `X-Export-Status` carries the job's (202, 200, 500).
 */
export async function exportStatus(ctx: OperationContext, caller: { clientId: string }, id: string, base: string): Promise<StatusAnswer> {
  const job = await ownJob(ctx, caller, id);
  const separate = (job.params as ExportParams).separateStatus === true;
  if (job.state === 'running') {
    const total = Math.max(job.total, job.exported);
    const percent = total === 0 ? 0 : Math.min(99, Math.floor((job.exported / total) * 100));
    const headers = { 'X-Progress': `${percent}% (${job.exported} of ${total} resources)`, 'Retry-After': String(retryAfter(job)) };
    return separate ? { status: 200, headers: { ...headers, 'X-Export-Status': '202' } } : { status: 202, headers };
  }
  if (job.state === 'failed') {
    const code = (job.errorStatus ?? 500) >= 500 ? 'exception' : 'invalid';
    const failure = new OperationOutcomeError(code, `Export ${id} failed: ${job.errorMessage ?? 'unknown error'}`);
    if (!separate) throw failure;
    return { status: 200, headers: { 'X-Export-Status': String(failure.status) }, body: outcome(code, failure.message) };
  }
  const files = await exportFiles(ctx.sql, id).catch((err: unknown) => {
    throw new OperationOutcomeError('unavailable', `The manifest of export ${id} could not be read just now; try again`, { cause: err, headers: { 'Retry-After': '5' } });
  });
  const item = (f: (typeof files)[number]) => ({ type: f.type, url: `${base}/$export-file/${id}/${f.name}`, count: f.count });
  return {
    status: 200,
    headers: { Expires: new Date(Date.now() + (job.expiresIn ?? 0) * 1000).toUTCString(), ...(separate ? { 'X-Export-Status': '200' } : {}) },
    body: {
      transactionTime: job.transactionTime!,
      request: job.request,
      requiresAccessToken: true,
      output: files.filter((f) => f.kind === 'output').map(item),
      deleted: files.filter((f) => f.kind === 'deleted').map(item),
      error: files.filter((f) => f.kind === 'error').map(item),
    },
  };
}

/** DELETE on the status URL: cancels a running export or drops a finished one; its files go at once. */
export async function deleteExportJob(ctx: OperationContext, caller: { clientId: string }, id: string): Promise<void> {
  await ownJob(ctx, caller, id);
  if (await deleteExport(ctx.sql, id)) await removeJobFiles(ctx.config.exportDir, id);
}

/** One output file, as HTTP (Range, ETag, gzip or plain). */
export async function exportDownload(ctx: OperationContext, caller: { clientId: string }, id: string, name: string, request: ServeRequest): Promise<Served> {
  await ownJob(ctx, caller, id);
  const file = /^[A-Za-z0-9.-]{1,128}$/.test(name) ? await exportFile(ctx.sql, id, name) : undefined;
  if (!file) throw notFound(`Export ${id} has no file ${JSON.stringify(name)}`);
  return serveFile(ctx.config.exportDir, id, file, request);
}

/** The OperationOutcome lines of the `error` file: one per parameter dropped under handling=lenient. */
export function issueOutcomes(params: ExportParams): string[] {
  return params.issues.map((message) => JSON.stringify({ ...outcome('invalid', message), issue: [{ severity: 'warning', code: 'not-supported', diagnostics: message }] }));
}

