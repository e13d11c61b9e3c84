import { constants } from 'node:fs';
import { access, realpath, stat } from 'node:fs/promises';
import { basename, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OperationOutcomeError } from '../fhir/outcome.ts';
import type { SourceLimits } from '../config.ts';
import { displayUrl, fetchConfined, type OriginCredential } from './outbound.ts';
import { watchPace } from './pace.ts';

/** An opened ndjson source: raw bytes (maybe gzipped), their size when known, a label for messages. */
export interface Source {
  stream: ReadableStream<Uint8Array>;
  bytesTotal?: number;
  name: string;
}

/**
 * Opens `url`: `http(s)://…` is fetched within `limits` (FHIRHOSE_SOURCE_ALLOW, redirects checked
 * hop by hop, connect timeout; the body errors when it stalls or trickles: see outbound.ts and
 * pace.ts); `file:///abs/path` or `/abs/path` is read from disk, only when its real path (symlinks
 * resolved) lies under the real path of `importRoot`.
 * Rejects with OperationOutcomeError: 'bad-gateway' (unreachable, non-2xx), 'timeout' (no answer in
 * time), 'forbidden' (refused by FHIRHOSE_SOURCE_ALLOW or a metadata address, outside the import
 * root, unreadable), 'not-found', 'invalid' (other schemes, relative paths, directories), all
 * starting `Cannot load "<name>": `. An abort of `signal` rejects with the signal's reason.
 * Failures while the body streams (a dropped connection, a stall) error `stream`: see `sourceError`.
 * A busy answer (429, 503) is a transient one, tried SOURCE_ATTEMPTS times in all; with
 * `busyWaitMs` it is "retry later" instead: asked again after its Retry-After for up to that much
 * waiting before it counts as an attempt (jobs use BUSY_SOURCE_WAIT_MS; a request, none).
 */
export async function openSource(
  url: string,
  options: { importRoot: string; limits: SourceLimits; signal?: AbortSignal; label?: string; credential?: OriginCredential; busyWaitMs?: number },
): Promise<Source> {
  if (url.startsWith('/')) return openFile(url, url, options);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw failure('invalid', options.label ?? url, `${url} is neither a URL nor an absolute path`);
  }
  const name = options.label ?? lastSegment(parsed);
  if (parsed.protocol === 'http:' || parsed.protocol === 'https:') return openHttp(parsed, name, options);
  if (parsed.protocol !== 'file:') {
    throw failure('invalid', name, `${parsed.protocol}// sources are not supported (use http(s)://, file:// or an absolute path)`);
  }
  let path: string;
  try {
    path = fileURLToPath(parsed);
  } catch (error) {
    throw failure('invalid', name, `${url} is not a local file URL (${reasonOf(error)})`);
  }
  return openFile(path, url, { ...options, label: name });
}

/**
 * The real path of `relative` (a `resource-file` input, relative to `importRoot`), with the same
 * confinement and errors as `openSource`; pass the result to `openSource`.
 */
export async function resolveImportPath(relative: string, importRoot: string): Promise<string> {
  return confine(resolve(importRoot, relative), relative, importRoot, basename(relative));
}

/**
 * Turns an error thrown while reading a source (by its stream, `gunzipIfNeeded` or `ndjsonLines`)
 * into the OperationOutcomeError to report: their own codes are kept ('unprocessable' for bad gzip
 * or binary data), anything else is a 'bad-gateway'; the message gets the `Cannot load "<name>": `
 * prefix once.
 */
export function sourceError(name: string, error: unknown): OperationOutcomeError {
  const prefix = `Cannot load "${name}": `;
  if (error instanceof OperationOutcomeError) {
    if (error.message.startsWith(prefix)) return error;
    return new OperationOutcomeError(error.code, prefix + error.message, { cause: error });
  }
  return failure('bad-gateway', name, `reading failed mid-way (${reasonOf(error)})`, error);
}

/** Statuses worth asking again: the source is busy or briefly broken (SPEC §13). */
const TRANSIENT = new Set([429, 500, 502, 503, 504]);
/** The source says it is busy: it will answer later (a fhirhose past FHIRHOSE_DOWNLOAD_CONCURRENCY). */
const BUSY = new Set([429, 503]);
/** Attempts in all for a transient status; a Retry-After above RETRY_AFTER_MAX_S is waited as that. */
export const SOURCE_ATTEMPTS = 3;
const RETRY_AFTER_MAX_S = 30;
/**
 * How long an import input waits on a source that keeps answering busy before that counts as a
 * failed attempt: a server at its download cap frees a slot when a download ends, which for a
 * big file can take minutes.
 */
export const BUSY_SOURCE_WAIT_MS = 10 * 60_000;
/** A busy answer is asked again after at least this long, whatever its Retry-After says (0 included). */
const BUSY_MIN_DELAY_MS = 1000;

async function openHttp(
  url: URL,
  name: string,
  options: { limits: SourceLimits; signal?: AbortSignal; credential?: OriginCredential; busyWaitMs?: number },
): Promise<Source> {
  const describe = (what: string) => `Cannot load "${name}": ${what}`;
  let busyMs = 0; // waited on busy answers, within options.busyWaitMs: those are not attempts
  let attempt = 0;
  for (let asked = 1; ; asked++) {
    const { response, url: final } = await fetchConfined(url, options.limits, { signal: options.signal, describe, credential: options.credential });
    if (!response.ok) {
      await response.body?.cancel().catch(() => {});
      if (BUSY.has(response.status) && options.busyWaitMs) {
        const delay = Math.max(BUSY_MIN_DELAY_MS, retryDelayMs(response.headers.get('retry-after'), asked));
        if (busyMs + delay <= options.busyWaitMs) {
          busyMs += delay;
          await sleep(delay, options.signal);
          continue;
        }
      }
      attempt++;
      if (TRANSIENT.has(response.status) && attempt < SOURCE_ATTEMPTS) {
        await sleep(retryDelayMs(response.headers.get('retry-after'), attempt), options.signal);
        continue;
      }
      const busyFor = busyMs > 0 ? `, after ${Math.round(busyMs / 1000)} s of busy answers` : '';
      const tries = TRANSIENT.has(response.status) ? ` (${asked} attempts${busyFor})` : '';
      const hint = response.status === 401 || response.status === 403 ? ': the source refused the credentials (storageDetail.credentialHttpBasic), or none were given' : '';
      throw failure('bad-gateway', name, `${displayUrl(final)} answered HTTP ${response.status}${tries}${hint}`);
    }
    const length = response.headers.get('content-length');
    // With a Content-Encoding fetch decodes the body, so Content-Length no longer counts its bytes.
    const sized = length !== null && !response.headers.has('content-encoding') && /^\d+$/.test(length);
    const body = response.body ?? new ReadableStream<Uint8Array>({ start: (controller) => controller.close() });
    return {
      stream: watchPace(body, options.limits, (what) => `${displayUrl(final)} ${what}`),
      bytesTotal: sized ? Number(length) : undefined,
      name,
    };
  }
}

/** Retry-After in seconds (or an HTTP date), at most RETRY_AFTER_MAX_S; else 1 s, 2 s … */
function retryDelayMs(header: string | null, attempt: number): number {
  if (header !== null) {
    const seconds = /^\d+$/.test(header.trim()) ? Number(header) : (Date.parse(header) - Date.now()) / 1000;
    if (Number.isFinite(seconds)) return Math.min(Math.max(seconds, 0), RETRY_AFTER_MAX_S) * 1000;
  }
  return 1000 * Math.min(attempt, RETRY_AFTER_MAX_S);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => { signal?.removeEventListener('abort', stop); resolve(); }, ms);
    const stop = () => { clearTimeout(timer); reject(signal!.reason); };
    signal?.addEventListener('abort', stop, { once: true });
  });
}

async function openFile(path: string, shown: string, options: { importRoot: string; label?: string }): Promise<Source> {
  const name = options.label ?? basename(path);
  const real = await confine(path, shown, options.importRoot, name);
  const info = await stat(real);
  if (!info.isFile()) throw failure('invalid', name, `${shown} is not a file`);
  await access(real, constants.R_OK).catch(() => {
    throw failure('forbidden', name, `${shown} is not readable`);
  });
  return { stream: Bun.file(real).stream(), bytesTotal: info.size, name };
}

/** `path` with symlinks resolved, refused unless it lies under the real import root. */
async function confine(path: string, shown: string, importRoot: string, name: string): Promise<string> {
  const root = await realpath(importRoot).catch((error: unknown) => {
    throw new OperationOutcomeError('exception', `FHIRHOSE_IMPORT_ROOT ${importRoot} is unusable (${reasonOf(error)})`);
  });
  const outside = failure('forbidden', name, `${shown} is outside FHIRHOSE_IMPORT_ROOT`);
  let real: string;
  try {
    real = await realpath(path);
  } catch (error) {
    // Whether a path exists, or why it cannot be read, is only told inside the root.
    const lexical = resolve(path);
    if (!within(lexical, root) && !within(lexical, resolve(importRoot))) throw outside;
    const code = (error as { code?: string }).code;
    if (code === 'EACCES') throw failure('forbidden', name, `${shown} is not readable`);
    if (code === 'ENOENT' || code === 'ENOTDIR') throw failure('not-found', name, `${shown} does not exist`);
    throw failure('not-found', name, `${shown} cannot be opened (${reasonOf(error)})`);
  }
  if (!within(real, root)) throw outside;
  return real;
}

function within(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

function lastSegment(url: URL): string {
  const segment = url.pathname.split('/').pop() ?? '';
  try {
    return decodeURIComponent(segment) || url.hostname || url.href;
  } catch {
    return segment;
  }
}


function reasonOf(error: unknown): string {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && code !== '') return code;
  return typeof message === 'string' ? message : String(error);
}

function failure(code: 'invalid' | 'forbidden' | 'not-found' | 'bad-gateway', name: string, what: string, cause?: unknown) {
  return new OperationOutcomeError(code, `Cannot load "${name}": ${what}`, { cause });
}
