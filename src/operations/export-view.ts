/**
 * An `$export` job as the console shows it (SPEC §14): state, progress, rate, ETA, bytes written,
 * per-type counts and files, the server holding its lease, the error of a failed one. Computed
 * from the job row, its files and its lease on every read, like the import session's view.
 */
import type { OperationContext } from './context.ts';
import { ROOT_CLIENT } from '../auth/auth.ts';
import { exportFiles, jobKey, readExport, type ExportFileRow, type ExportJobRow } from '../storage/exports.ts';
import { groupLeases, type Lease } from '../storage/jobs.ts';
import type { ExportParams } from './export-request.ts';

export interface ExportView {
  id: string;
  /** The export's own words: running, done, failed. */
  state: 'running' | 'done' | 'failed';
  /** The console's filter state (storage/console-list.ts): active, done, error. */
  status: 'active' | 'done' | 'error';
  level: string;
  request: string;
  types: string[];
  since?: string;
  clientId: string;
  createdAt: string;
  finishedAt?: string;
  transactionTime?: string;
  /** Resources written so far, and the estimate of all (exact once done). */
  exported: number;
  total: number;
  progress: number;
  /** Resources per second since kick-off. */
  rate: number;
  etaSeconds?: number;
  /** Gzip bytes of the files written so far. */
  bytes: number;
  /** Output files by type, with their counts; a file is listed once its part is committed. */
  output: { type: string; count: number; files: { name: string; url: string; count: number; bytes: number }[] }[];
  deleted: number;
  errorFiles: { name: string; url: string }[];
  owner?: string;
  leaseUntil?: string;
  error?: string;
  /** Parameters dropped under `Prefer: handling=lenient` (also in the `error` file). */
  issues: string[];
  expiresAt?: string;
}

/**
 * The export if this caller may see it (its owner, or root), else undefined — deleted, expired,
 * never existed or another client's: the console shows nothing of it.
 */
export async function readExportView(ctx: OperationContext, id: string): Promise<ExportView | undefined> {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) return undefined;
  const job = await readExport(ctx.sql, id);
  if (!job || (job.expiresIn !== null && job.expiresIn <= 0)) return undefined;
  const caller = ctx.caller?.clientId;
  if (caller !== undefined && caller !== ROOT_CLIENT && caller !== job.clientId) return undefined;
  const [files, leases] = await Promise.all([exportFiles(ctx.sql, id), groupLeases(ctx.sql, `export:all`)]);
  return exportView(job, files, leases.get(jobKey(id)));
}

export function exportView(job: ExportJobRow, files: ExportFileRow[], lease: Lease | undefined, now = Date.now()): ExportView {
  const params = job.params as Partial<ExportParams>;
  const total = Math.max(job.total, job.exported);
  const progress = job.state === 'done' ? 1 : total === 0 ? 0 : Math.min(0.99, job.exported / total);
  const end = job.finishedAt ? Date.parse(job.finishedAt) : now;
  const seconds = Math.max(0.001, (end - Date.parse(job.createdAt)) / 1000);
  const rate = Math.round((job.exported / seconds) * 10) / 10;
  const url = (name: string) => `/$export-file/${job.id}/${name}`;
  const output = new Map<string, ExportView['output'][number]>();
  for (const f of files.filter((f) => f.kind === 'output')) {
    const entry = output.get(f.type) ?? { type: f.type, count: 0, files: [] };
    entry.count += f.count;
    entry.files.push({ name: f.name, url: url(f.name), count: f.count, bytes: f.bytes });
    output.set(f.type, entry);
  }
  const view: ExportView = {
    id: job.id,
    state: job.state,
    status: job.state === 'running' ? 'active' : job.state === 'failed' ? 'error' : 'done',
    level: job.level,
    request: job.request,
    types: Array.isArray(params.types) ? params.types : [],
    ...(typeof params.since === 'string' && { since: params.since }),
    clientId: job.clientId,
    createdAt: job.createdAt,
    ...(job.finishedAt !== null && { finishedAt: job.finishedAt }),
    ...(job.transactionTime !== null && { transactionTime: job.transactionTime }),
    exported: job.exported,
    total,
    progress,
    rate,
    bytes: files.reduce((n, f) => n + f.bytes, 0),
    output: [...output.values()].sort((a, b) => a.type.localeCompare(b.type)),
    deleted: files.filter((f) => f.kind === 'deleted').reduce((n, f) => n + f.count, 0),
    errorFiles: files.filter((f) => f.kind === 'error').map((f) => ({ name: f.name, url: url(f.name) })),
    ...(lease !== undefined && { owner: lease.owner, leaseUntil: lease.leaseUntil }),
    ...(job.errorMessage !== null && { error: job.errorMessage }),
    issues: Array.isArray(params.issues) ? params.issues : [],
    ...(job.expiresAt !== null && { expiresAt: job.expiresAt }),
  };
  if (job.state === 'running' && rate > 0 && total > job.exported) view.etaSeconds = Math.round((total - job.exported) / rate);
  return view;
}
