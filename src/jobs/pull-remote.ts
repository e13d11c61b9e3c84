/**
 * The Bulk Data client side of a pull (SPEC §13 `exportType: dynamic`, HL7 Bulk Data Access):
 * kick off the other server's `$export`, poll its status URL, delete it when done. Every request
 * goes through fetchConfined (FHIRHOSE_SOURCE_ALLOW, redirects re-checked, connect timeout) with
 * the session's credential for the export's own origin; no message ever carries the credential
 * (`scrub`), nor a query string.
 */
import type { SourceLimits } from '../config.ts';
import { OperationOutcomeError } from '../fhir/outcome.ts';
import { isPlainObject } from '../fhir/resource.ts';
import { displayUrl, fetchConfined, type OriginCredential } from '../streams/outbound.ts';
import type { KickoffParams } from '../storage/import-pulls.ts';

export interface RemoteOptions {
  limits: SourceLimits;
  credential?: OriginCredential;
  signal?: AbortSignal;
}

export type KickoffAnswer =
  | { kind: 'started'; statusUrl: string }
  /** The other server answered without starting an export: nothing to clean up there. */
  | { kind: 'refused'; message: string }
  /** No answer: an export may or may not have started there. */
  | { kind: 'unknown'; message: string };

export type PollAnswer =
  | { kind: 'running'; progress?: string; waitMs: number }
  | { kind: 'transient'; message: string; waitMs: number }
  | { kind: 'failed'; message: string }
  | { kind: 'done'; manifest: Record<string, unknown> };

/** Waits asked by Retry-After are kept within these bounds (README "Migrate from another FHIR server"). */
export const RETRY_AFTER_MIN_MS = 1000;
export const RETRY_AFTER_MAX_MS = 120_000;
/** The wait when a 202 or a busy answer says nothing. */
const DEFAULT_WAIT_MS = 2000;
/** Busy answers (429, 503) to a kick-off before giving up; none of them started an export. */
const KICKOFF_ATTEMPTS = 5;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const MAX_OUTCOME_CHARS = 500;
const BUSY = new Set([429, 502, 503, 504]);

/**
 * Kicks off the export: GET with the parameters in the query (SPEC §13), or POST `Parameters`
 * when a `patient` is given or the server refuses GET with 405.
 */
export async function kickOffRemote(exportUrl: string, kickoff: KickoffParams, options: RemoteOptions): Promise<KickoffAnswer> {
  let post = kickoff.params.some(([name]) => name === 'patient');
  const shown = displayUrl(new URL(exportUrl));
  for (let attempt = 1; ; attempt++) {
    let response: Response;
    let url: URL;
    try {
      ({ response, url } = await send(exportUrl, kickoff, post, options));
    } catch (error) {
      if (options.signal?.aborted) throw error;
      const message = scrub(reason(error), options.credential);
      // Refused before anything was sent (FHIRHOSE_SOURCE_ALLOW, a metadata address), or the
      // connection was refused: no export can have started.
      if ((error instanceof OperationOutcomeError && error.code === 'forbidden') || /refused/i.test(message)) {
        return { kind: 'refused', message: `The kick-off of ${shown} failed: ${message}` };
      }
      return { kind: 'unknown', message: `The kick-off of ${shown} got no answer (${message}); an export may have started there, so it is not sent again` };
    }
    if (response.status === 202) {
      await response.body?.cancel().catch(() => {});
      const location = response.headers.get('content-location');
      if (location === null) return { kind: 'unknown', message: `The kick-off of ${shown} answered 202 without a Content-Location: the export's status cannot be followed` };
      try {
        return { kind: 'started', statusUrl: new URL(location, url).href };
      } catch {
        return { kind: 'unknown', message: `The kick-off of ${shown} answered 202 with an invalid Content-Location` };
      }
    }
    const body = await readBody(response, 64 * 1024).catch(() => '');
    if (response.status === 405 && !post) {
      post = true;
      continue;
    }
    if (BUSY.has(response.status) && attempt < KICKOFF_ATTEMPTS) {
      await sleep(waitMs(response.headers.get('retry-after')), options.signal);
      continue;
    }
    return { kind: 'refused', message: `The kick-off of ${shown} ${answered(response.status, body, options.credential)}` };
  }
}

/** One poll of the status URL (Accept: application/json, as the IG's clients send). */
export async function pollRemote(statusUrl: string, options: RemoteOptions): Promise<PollAnswer> {
  const shown = displayUrl(new URL(statusUrl));
  let response: Response;
  try {
    ({ response } = await fetchConfined(new URL(statusUrl), options.limits, {
      signal: options.signal, credential: options.credential, headers: { accept: 'application/json' }, describe: (what) => what,
    }));
  } catch (error) {
    if (options.signal?.aborted) throw error;
    if (error instanceof OperationOutcomeError && error.code === 'forbidden') return { kind: 'failed', message: `The export's status URL is refused: ${error.message}` };
    return { kind: 'transient', message: `${shown}: ${scrub(reason(error), options.credential)}`, waitMs: DEFAULT_WAIT_MS };
  }
  if (response.status === 202) {
    await response.body?.cancel().catch(() => {});
    const progress = response.headers.get('x-progress') ?? undefined;
    return { kind: 'running', progress: progress?.slice(0, 200), waitMs: waitMs(response.headers.get('retry-after')) };
  }
  let body: string;
  try {
    body = await readBody(response, MAX_BODY_BYTES);
  } catch (error) {
    return { kind: 'transient', message: `${shown}: the answer broke off (${scrub(reason(error), options.credential)})`, waitMs: DEFAULT_WAIT_MS };
  }
  if (response.status === 200) {
    let manifest: unknown;
    try {
      manifest = JSON.parse(body);
    } catch {
      return { kind: 'failed', message: `The export at ${shown} answered 200 with something that is not JSON` };
    }
    if (!isPlainObject(manifest)) return { kind: 'failed', message: `The export at ${shown} answered 200 with something that is not a manifest` };
    return { kind: 'done', manifest };
  }
  const outcome = outcomeOf(body);
  // The IG: an error status with an OperationOutcome is a failed export, unless every issue is
  // `transient` (the poll failed, not the export). Busy statuses, and a 500 without an outcome
  // (a proxy, a restarting server), are asked again.
  const transient = outcome ? outcome.codes.every((c) => c === 'transient') : BUSY.has(response.status) || response.status === 500;
  if (transient || response.status === 429) {
    return { kind: 'transient', message: `${shown} ${answered(response.status, body, options.credential)}`, waitMs: waitMs(response.headers.get('retry-after')) };
  }
  return { kind: 'failed', message: `The export at ${shown} ${answered(response.status, body, options.credential)}` };
}

/** DELETE on the status URL once every file is read (the IG: a client may; it frees the other server). Best effort. */
export async function deleteRemote(statusUrl: string, options: RemoteOptions): Promise<number | undefined> {
  try {
    const { response } = await fetchConfined(new URL(statusUrl), options.limits, {
      method: 'DELETE', signal: options.signal, credential: options.credential, headers: { accept: 'application/fhir+json' }, describe: (what) => what,
    });
    await response.body?.cancel().catch(() => {});
    return response.status;
  } catch {
    return undefined;
  }
}

async function send(exportUrl: string, kickoff: KickoffParams, post: boolean, options: RemoteOptions): Promise<{ response: Response; url: URL }> {
  const url = new URL(exportUrl);
  const headers = { accept: 'application/fhir+json', prefer: 'respond-async' };
  const describe = (what: string) => what;
  if (!post) {
    for (const [name, value] of kickoff.params) url.searchParams.append(name, value);
    return fetchConfined(url, options.limits, { signal: options.signal, credential: options.credential, headers, describe });
  }
  const parameter = kickoff.params.map(([name, value]) => {
    if (name === 'patient') return { name, valueReference: { reference: value } };
    if (name === '_since' || name === '_until') return { name, valueInstant: value };
    return { name, valueString: value };
  });
  return fetchConfined(url, options.limits, {
    method: 'POST', signal: options.signal, credential: options.credential, describe,
    headers: { ...headers, 'content-type': 'application/fhir+json' },
    body: JSON.stringify({ resourceType: 'Parameters', parameter }),
  });
}

/** `answered HTTP 500: <the outcome's diagnostics>`, with a hint for refused credentials. */
function answered(status: number, body: string, credential?: OriginCredential): string {
  const outcome = outcomeOf(body);
  const detail = outcome?.text ? `: ${scrub(outcome.text, credential).slice(0, MAX_OUTCOME_CHARS)}` : '';
  const hint = status === 401 || status === 403 ? ' (the other server refused the credentials given, or none were given)' : '';
  return `answered HTTP ${status}${hint}${detail}`;
}

function outcomeOf(body: string): { codes: string[]; text: string } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!isPlainObject(value) || value.resourceType !== 'OperationOutcome' || !Array.isArray(value.issue)) return undefined;
  const issues = value.issue.filter(isPlainObject);
  const codes = issues.map((i) => String(i.code ?? ''));
  const text = issues.map((i) => (typeof i.diagnostics === 'string' ? i.diagnostics : isPlainObject(i.details) && typeof i.details.text === 'string' ? i.details.text : '')).filter(Boolean).join('; ');
  return { codes, text };
}

/** Retry-After (seconds or an HTTP date) within [RETRY_AFTER_MIN_MS, RETRY_AFTER_MAX_MS]. */
export function waitMs(header: string | null, now = Date.now()): number {
  if (header === null || header.trim() === '') return DEFAULT_WAIT_MS;
  const text = header.trim();
  const ms = /^\d+$/.test(text) ? Number(text) * 1000 : Date.parse(text) - now;
  if (!Number.isFinite(ms)) return DEFAULT_WAIT_MS;
  return Math.min(RETRY_AFTER_MAX_MS, Math.max(RETRY_AFTER_MIN_MS, ms));
}

async function readBody(response: Response, max: number): Promise<string> {
  if (!response.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body) {
    size += chunk.byteLength;
    if (size > max) {
      await response.body.cancel().catch(() => {});
      throw new Error(`the answer is larger than ${max} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The credential's value, its base64 part and what it decodes to, cut out of `text`. */
export function scrub(text: string, credential?: OriginCredential): string {
  if (!credential) return text;
  const secrets = new Set<string>();
  const value = credential.authorization;
  secrets.add(value);
  const token = value.slice(value.indexOf(' ') + 1);
  if (token.length >= 4) {
    secrets.add(token);
    const decoded = Buffer.from(token, 'base64').toString('utf8');
    if (/^[\x20-\x7e]{4,}$/.test(decoded)) {
      secrets.add(decoded);
      const password = decoded.slice(decoded.indexOf(':') + 1);
      if (password.length >= 4) secrets.add(password);
    }
  }
  let out = text;
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) out = out.split(secret).join('[credential]');
  return out;
}

function reason(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => { signal?.removeEventListener('abort', stop); resolve(); }, ms);
    const stop = () => { clearTimeout(timer); reject(signal!.reason); };
    signal?.addEventListener('abort', stop, { once: true });
  });
}
