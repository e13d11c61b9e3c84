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
  /**
   * The other server's export pulled (SPEC §13 `exportType: dynamic`): `new` / `kicking-off` /
   * `polling` (its own X-Progress in `remoteProgress`) / `listed` (its files are the inputs);
   * `transactionTime` is the source's, what a later `_since: latest` starts from.
   */
  pull?: {
    exportUrl: string;
    state: string;
    since?: string;
    remoteProgress?: string;
    transactionTime?: string;
    requiresAccessToken?: boolean;
  };
  inputs: InputView[];
}

export function sessionView(session: SessionRow, inputs: InputRow[], now = Date.now()): SessionView {
  const r = session.resource;
  const activeMs = (r.activeMs ?? 0) + (r.activeSince ? Math.max(0, now - Date.parse(r.activeSince)) : 0);
  const imported = sum(inputs.map((i) => i.imported));
  const rate = activeMs > 0 ? round(imported / (activeMs / 1000)) : 0;
  // 1 only once the session is done: every input may be done a moment before the session is.
  const progress = r.status === 'done' ? 1 : Math.min(0.9999, sessionProgress(inputs, r.sized === true));
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
    ...(session.pull && { pull: pullView(session.pull) }),
    inputs: inputs.map((i) => inputView(i, now)),
  };
  if (r.status === 'active' && progress > 0 && progress < 1 && activeMs > 0) {
    const seconds = Math.round(((activeMs / 1000) * (1 - progress)) / progress);
    view.etaSeconds = seconds;
    view.eta = new Date(now + seconds * 1000).toISOString();
  }
  return view;
}

function pullView(p: NonNullable<SessionRow['pull']>): NonNullable<SessionView['pull']> {
  return {
    exportUrl: displayUrl(p.exportUrl),
    state: p.state,
    ...(p.since !== null && { since: p.since }),
    ...(p.remoteProgress !== null && { remoteProgress: p.remoteProgress }),
    ...(p.transactionTime !== null && { transactionTime: p.transactionTime }),
    ...(p.requiresAccessToken !== null && { requiresAccessToken: p.requiresAccessToken }),
  };
}

function inputView(i: InputRow, now: number): InputView {
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
    ...(i.startedAt !== null && { durationMs: inputDuration(i, now) }),
    checkpoint: i.checkpoint,
    rate: i.runMs > 0 ? round(i.imported / (i.runMs / 1000)) : 0,
    ...(i.owner !== undefined && { owner: i.owner, leaseUntil: i.leaseUntil }),
  };
}

/**
 * Running: since it started. Finished, failed or stopped by a sibling's failure: until then. Paused
 * or waiting to run again: the time its batches took, which does not grow while nothing runs.
 */
function inputDuration(i: InputRow, now: number): number {
  const started = Date.parse(i.startedAt!);
  if (i.status === 'active') return Math.max(0, now - started);
  if (i.finishedAt !== null) return Math.max(0, Date.parse(i.finishedAt) - started);
  return Math.round(i.runMs);
}

/**
 * Never decreasing, by construction (SPEC §8: progress tells the truth):
 * - `sized` (every size was known at start, import-sizes.ts): bytes read over bytes in total, each
 *   input weighed by its size;
 * - otherwise each input weighs the same: done counts 1, a running input of known size its share
 *   of bytes read, one of unknown size 0 until it is done.
 * The weights never change during a session, `bytes_read` only grows and `bytes_total` is written
 * once, so neither sum can go back. An input not done counts at most 99 % of its weight: the last
 * bytes are read before the last batch commits.
 */
function sessionProgress(inputs: InputRow[], sized: boolean): number {
  if (inputs.length === 0) return 0;
  const fraction = (i: InputRow) =>
    i.status === 'done' ? 1 : i.bytesTotal ? Math.min(0.99, i.bytesRead / i.bytesTotal) : 0;
  if (sized && inputs.every((i) => i.bytesTotal !== null && i.bytesTotal > 0)) {
    const total = sum(inputs.map((i) => i.bytesTotal!));
    return floor4(sum(inputs.map((i) => fraction(i) * i.bytesTotal!)) / total);
  }
  return floor4(sum(inputs.map(fraction)) / inputs.length);
}

/** Rounded down, so a rounding never shows 1 for an unfinished session, nor a step back. */
function floor4(value: number): number {
  return Math.floor(value * 10_000) / 10_000;
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
