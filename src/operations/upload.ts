/**
 * Uploads (SPEC §13): `POST /$load` and `POST /<Type>/$load` whose body is the ndjson (or
 * ndjson.gz) itself. The body is a source like a URL's: the same pipeline, limits (expansion,
 * line size, stall and minimum rate) and answers (load.ts). Gzip is detected from the bytes, so
 * `Content-Encoding: gzip` and an undeclared `.ndjson.gz` body both work.
 *
 * The options a JSON body would carry come as query parameters (`method`, `update`, `validation`,
 * `checks`, `strip-nulls`, `temp_table`); they go through the same zod schema, so a bad value is
 * the same 400. A body cut short (the client gone) errors the stream or aborts the signal inside
 * the load's one transaction, which then rolls back: nothing is written.
 */
import type { OperationContext } from './context.ts';
import { loadSource, type LoadResponse } from './load.ts';
import { parseLoadRequest } from './load-request.ts';
import { OperationOutcomeError, invalid } from '../fhir/outcome.ts';
import { watchPace } from '../streams/pace.ts';

/** The Content-Types that make a `$load` body an upload rather than a JSON/YAML request. */
export const UPLOAD_TYPES: readonly string[] = ['application/fhir+ndjson', 'application/x-ndjson', 'application/ndjson'];

export function isUpload(contentType: string | undefined): boolean {
  return UPLOAD_TYPES.includes((contentType ?? '').split(';')[0]!.trim().toLowerCase());
}

const QUERY_OPTIONS = ['method', 'update', 'validation', 'checks', 'strip-nulls', 'temp_table'];

export interface Upload {
  body: ReadableStream<Uint8Array> | null;
  query: URLSearchParams;
  contentEncoding?: string;
  signal?: AbortSignal;
}

export async function loadUpload(ctx: OperationContext, upload: Upload, options: { type?: string } = {}): Promise<LoadResponse> {
  const request = parseLoadRequest({ source: 'upload', ...optionsOf(upload.query) });
  const encoding = (upload.contentEncoding ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'x-gzip') {
    throw new OperationOutcomeError('unsupported-media', `Content-Encoding "${upload.contentEncoding}" is not supported for an upload; send gzip or none`);
  }
  if (upload.body === null) throw invalid('The upload is empty: send the ndjson as the request body');
  const name = options.type ? `${options.type} upload` : 'upload';
  // a stalled body is not cancelled: the client's request ends with our answer (pace.ts)
  const stream = watchPace(upload.body, ctx.config.sources, (what) => `the client's body ${what}`, { cancelOnFail: false });
  return loadSource(ctx, request, { stream, name }, { type: options.type, signal: upload.signal });
}

/** Query parameters → the fields of a `$load` body; `validation=on&checks=refs` → `validation: {enable, checks}`. */
function optionsOf(query: URLSearchParams): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const key of new Set(query.keys())) {
    if (!QUERY_OPTIONS.includes(key)) {
      throw invalid(`Invalid $load request: unknown query parameter "${key}" for an upload (known: ${QUERY_OPTIONS.join(', ')})`);
    }
    const values = query.getAll(key);
    if (values.length > 1) throw invalid(`Invalid $load request: query parameter "${key}" is given ${values.length} times`);
  }
  for (const key of ['method', 'temp_table']) if (query.has(key)) body[key] = query.get(key);
  for (const key of ['update', 'strip-nulls']) if (query.has(key)) body[key] = flag(key, query.get(key)!);
  if (query.has('validation') || query.has('checks')) {
    body.validation = {
      ...(query.has('validation') ? { enable: query.get('validation') } : {}),
      ...(query.has('checks') ? { checks: query.get('checks') } : {}),
    };
  }
  return body;
}

function flag(key: string, value: string): unknown {
  if (value === 'true' || value === '') return true;
  if (value === 'false') return false;
  return value; // the schema names it: `update must be a boolean`
}
