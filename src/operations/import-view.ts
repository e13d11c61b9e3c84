/**
 * What `GET /BulkImportStatus/<id>` shows (SPEC §8): the session and, per input, status, bytes,
 * lines, imported, errors (first 100 with line numbers), times and checkpoint; in total imported,
 * rate, progress 0–1 and, while active, an ETA. Computed from the rows on every read.
 */
import type { InputRow, SessionRow } from '../storage/import-sessions.ts';

export interface InputView {
  type?: string;
  url: string;
  storageDetail: { type: string };
  status: string;
  bytesRead: number;
  bytesTotal?: number;
  linesRead: number;
  imported: number;
  errorCount: number;
  errors: { line: number; message: string }[];
  message?: string;
  startedAt?: string;
  finishedAt?: string;
  durationMs?: number;
  /** Number of the last line committed: a restarted input skips this many lines. */
  checkpoint: number;
  /** Resources per second of this input's own running time. */
  rate: number;
  /** The server running the input now, and when its lease ends unless renewed (SPEC §11). */
  owner?: string;
  leaseUntil?: string;
}

export interface SessionView {
  resourceType: 'BulkImportStatus';
  id: string;
  meta: { versionId: string; lastUpdated: string };
  status: string;
  message?: string;
  inputFormat: string;
  inputSource?: string;
  contentEncoding?: string;
  update: boolean;
  startedAt: string;
  finishedAt?: string;
  /** Time spent active (pauses excluded). */
  durationMs: number;
  imported: number;
  errorCount: number;
  /** Resources per second of active time. */
  rate: number;
  progress: number;
  /** Only while active and once something was read: seconds left, and when that is. */
  etaSeconds?: number;
  eta?: string;
  inputs: InputView[];
}

export function sessionView(session: SessionRow, inputs: InputRow[], now = Date.now()): SessionView {
  const r = session.resource;
  const activeMs = (r.activeMs ?? 0) + (r.activeSince ? Math.max(0, now - Date.parse(r.activeSince)) : 0);
  const imported = sum(inputs.map((i) => i.imported));
  const rate = activeMs > 0 ? round(imported / (activeMs / 1000)) : 0;
  const progress = sessionProgress(inputs);
  const view: SessionView = {
    resourceType: 'BulkImportStatus',
    id: session.id,
    meta: { versionId: String(session.txid), lastUpdated: session.lastUpdated },
    status: r.status,
    ...(r.message !== undefined && { message: r.message }),
    inputFormat: r.inputFormat,
    ...(r.inputSource !== undefined && { inputSource: r.inputSource }),
    ...(r.contentEncoding !== undefined && { contentEncoding: r.contentEncoding }),
    update: r.update,
    startedAt: r.startedAt,
    ...(r.finishedAt !== undefined && { finishedAt: r.finishedAt }),
    durationMs: Math.round(activeMs),
    imported,
    errorCount: sum(inputs.map((i) => i.errorCount)),
    rate,
    progress,
    inputs: inputs.map((i) => inputView(i, now)),
  };
  if (r.status === 'active' && progress > 0 && progress < 1 && activeMs > 0) {
    const seconds = Math.round(((activeMs / 1000) * (1 - progress)) / progress);
    view.etaSeconds = seconds;
    view.eta = new Date(now + seconds * 1000).toISOString();
  }
  return view;
}

function inputView(i: InputRow, now: number): InputView {
  const end = i.finishedAt ? Date.parse(i.finishedAt) : now;
  return {
    ...(i.type !== null && { type: i.type }),
    url: displayUrl(i.url),
    storageDetail: { type: i.storage },
    status: i.status,
    bytesRead: i.bytesRead,
    ...(i.bytesTotal !== null && { bytesTotal: i.bytesTotal }),
    linesRead: i.linesRead,
    imported: i.imported,
    errorCount: i.errorCount,
    errors: i.errors,
    ...(i.message !== null && { message: i.message }),
    ...(i.startedAt !== null && { startedAt: i.startedAt }),
    ...(i.finishedAt !== null && { finishedAt: i.finishedAt }),
    ...(i.startedAt !== null && { durationMs: Math.max(0, end - Date.parse(i.startedAt)) }),
    checkpoint: i.checkpoint,
    rate: i.runMs > 0 ? round(i.imported / (i.runMs / 1000)) : 0,
    ...(i.owner !== undefined && { owner: i.owner, leaseUntil: i.leaseUntil }),
  };
}

/**
 * Byte-weighted when every size is known (the honest measure for files of different sizes);
 * otherwise the mean of per-input fractions, where an input of unknown size counts only when done.
 */
function sessionProgress(inputs: InputRow[]): number {
  if (inputs.length === 0) return 0;
  const fraction = (i: InputRow) =>
    i.status === 'done' ? 1 : i.bytesTotal ? Math.min(1, i.bytesRead / i.bytesTotal) : 0;
  if (inputs.every((i) => i.bytesTotal !== null && i.bytesTotal > 0)) {
    const total = sum(inputs.map((i) => i.bytesTotal!));
    return round(sum(inputs.map((i) => fraction(i) * i.bytesTotal!)) / total, 4);
  }
  return round(sum(inputs.map(fraction)) / inputs.length, 4);
}

/** Credentials and query strings stay out of status answers: pre-signed URLs carry secrets. */
function displayUrl(url: string): string {
  if (!/^https?:\/\//i.test(url)) return url;
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
  } catch {
    return url;
  }
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
