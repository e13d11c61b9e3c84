/**
 * The `POST /$import` body (SPEC §8), parsed with zod into one typed request. Fields may sit at the
 * top level or under `resource:` (the original Aidbox example); `inputs[].resourceType` is an alias
 * of `inputs[].type`. A malformed body is a 400 that names the first bad field, with its path.
 */
import { z } from 'zod';
import { invalid } from '../fhir/outcome.ts';
import { requestError } from './request-issue.ts';
import { ID_PATTERN, isPlainObject } from '../fhir/resource.ts';
import { isFhirType } from '../fhir/types.ts';

export const IMPORT_ACTIONS = ['start', 'pause', 'abort', 'resume', 'force-resume'] as const;
export type ImportAction = (typeof IMPORT_ACTIONS)[number];

// The formats an ndjson importer can honestly claim to read; anything else would be misparsed.
const INPUT_FORMATS = ['application/fhir+ndjson', 'application/ndjson', 'application/x-ndjson', 'ndjson'] as const;

const input = z.object({
  type: z.string().optional(),
  resourceType: z.string().optional(),
  url: z.string().min(1, 'must not be empty'),
  storageDetail: z.object({ type: z.enum(['url', 'resource-file']).default('url') }).optional(),
});

const schema = z.object({
  id: z.string().regex(ID_PATTERN, 'must be a FHIR id: 1-64 of A-Z a-z 0-9 - .').optional(),
  action: z.enum(IMPORT_ACTIONS).default('start'),
  secret: z.string().min(1, 'must not be empty').max(1024, 'must be at most 1024 characters').optional(),
  inputFormat: z.enum(INPUT_FORMATS).default('application/fhir+ndjson'),
  inputSource: z.string().optional(),
  contentEncoding: z.enum(['gzip', 'plain']).optional(),
  mode: z.string().optional(),
  update: z.boolean().default(false),
  inputs: z.array(input).optional(),
});

export interface ImportInputRequest {
  /** The type every line must have; undefined: each line names its own `resourceType`. */
  type?: string;
  url: string;
  storage: 'url' | 'resource-file';
}

export interface ImportRequest {
  id?: string;
  action: ImportAction;
  secret?: string;
  inputFormat: string;
  inputSource?: string;
  contentEncoding?: 'gzip' | 'plain';
  update: boolean;
  /** Present (non-empty) for `start`; ignored by the other actions. */
  inputs: ImportInputRequest[];
}

export function parseImportRequest(body: unknown): ImportRequest {
  if (!isPlainObject(body)) throw invalid('Invalid $import request: the body must be an object');
  const fields = isPlainObject(body.resource) ? body.resource : body;
  const parsed = schema.safeParse(fields);
  if (!parsed.success) throw requestError('$import', parsed.error);
  const r = parsed.data;
  if (r.action !== 'start' && r.id === undefined) throw invalid(`Invalid $import request: id is required for action "${r.action}"`);
  const inputs: ImportInputRequest[] = [];
  if (r.action === 'start') {
    if (!r.inputs || r.inputs.length === 0) throw invalid('Invalid $import request: inputs is required for action "start" (at least one input)');
    for (const [i, item] of r.inputs.entries()) inputs.push(checkInput(item, i));
  }
  return {
    id: r.id,
    action: r.action,
    secret: r.secret,
    inputFormat: r.inputFormat,
    inputSource: r.inputSource,
    contentEncoding: r.contentEncoding,
    update: r.update,
    inputs,
  };
}

function checkInput(item: z.infer<typeof input>, i: number): ImportInputRequest {
  if (item.type !== undefined && item.resourceType !== undefined && item.type !== item.resourceType) {
    throw invalid(`Invalid $import request: inputs[${i}].type "${item.type}" and inputs[${i}].resourceType "${item.resourceType}" differ`);
  }
  const type = item.type ?? item.resourceType;
  if (type !== undefined && !isFhirType(type)) {
    throw invalid(`Invalid $import request: inputs[${i}].type "${type}" is not a FHIR R4 resource type`);
  }
  const storage = item.storageDetail?.type ?? 'url';
  const url = item.url;
  if (storage === 'url' && !/^(https?|file):\/\//i.test(url) && !url.startsWith('/')) {
    throw invalid(`Invalid $import request: inputs[${i}].url "${url}" must be an http(s):// or file:// URL or an absolute path (or use storageDetail.type resource-file)`);
  }
  if (storage === 'resource-file' && (url.startsWith('/') || /^[a-z][a-z0-9+.-]*:\/\//i.test(url))) {
    throw invalid(`Invalid $import request: inputs[${i}].url "${url}" must be a path relative to FHIRHOSE_IMPORT_ROOT for storageDetail.type resource-file`);
  }
  return { type, url, storage };
}
