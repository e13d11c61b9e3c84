/**
 * `POST /$import` with a FHIR `Parameters` body (SPEC §13), in the shape HAPI FHIR and the
 * Microsoft FHIR server accept:
 *
 *   inputFormat, inputSource, mode, storageDetail (parts type, credentialHttpBasic "user:password"),
 *   input* (parts type, url)
 *
 * → the same typed ImportRequest as the Aidbox body, one input per `input`, plus the credential to
 * send to the inputs' origins. A malformed body is a 400 naming the parameter or part, never
 * showing the credential's value.
 */
import { invalid } from '../fhir/outcome.ts';
import { isPlainObject, type Json } from '../fhir/resource.ts';
import { isFhirType } from '../fhir/types.ts';
import { parseImportRequest, type ImportRequest } from './import-request.ts';
import type { SourceCredential } from '../storage/import-credentials.ts';

export type ParametersImport =
  | { kind: 'inputs'; request: ImportRequest; credential?: SourceCredential }
  /** `exportUrl` + `exportType: static`: the inputs are the files of that manifest (import-pull.ts). */
  | { kind: 'manifest'; exportUrl: string; authorization?: string; fields: Record<string, string> }
  /**
   * `exportUrl` + `exportType: dynamic` (the default): kick off the export there and pull its files
   * (jobs/pull-job.ts). `kickoff`: the parameters passed through, `_since` left out when `latest`.
   */
  | { kind: 'pull'; exportUrl: string; authorization?: string; fields: Record<string, string>; kickoff: [string, string][]; sinceLatest: boolean };

const TOP = new Set(['inputFormat', 'inputSource', 'mode', 'storageDetail', 'input', 'exportUrl', 'exportType', 'fileRequestHeader']);
/** HAPI's `https`, Microsoft's and the Bulk Data IG's names for "fetch the url". */
const STORAGE_TYPES = new Set(['https', 'http', 'url']);
/** Parts HAPI sends that change nothing here (fhirhose sizes its own batches). */
const IGNORED_STORAGE_PARTS = new Set(['maxBatchResourceCount']);
/** Kick-off parameters of a dynamic pull, passed through to the other server (SPEC §13). */
const KICKOFF = new Set(['_since', '_until', '_type', '_typeFilter', '_elements', 'patient']);
/** Kick-off parameters that may be given more than once. */
const REPEATABLE = new Set(['_typeFilter', 'patient', '_type', '_elements']);

export function isParameters(body: unknown): boolean {
  return isPlainObject(body) && body.resourceType === 'Parameters';
}

export function parseImportParameters(body: unknown): ParametersImport {
  if (!isPlainObject(body) || body.resourceType !== 'Parameters') throw bad('the body is not a Parameters resource');
  const parameters = body.parameter;
  if (!Array.isArray(parameters) || parameters.length === 0) throw bad('"parameter" must be a non-empty array');
  const fields: Record<string, unknown> = {};
  const inputs: { type?: string; url: string }[] = [];
  let userPassword: string | undefined;
  let authorization: string | undefined;
  const kickoff: [string, string][] = [];
  for (const [i, parameter] of parameters.entries()) {
    const where = `parameter[${i}]`;
    if (!isPlainObject(parameter) || typeof parameter.name !== 'string') throw bad(`${where} must be an object with a "name"`);
    const name = parameter.name;
    if (!TOP.has(name) && !KICKOFF.has(name)) throw bad(`${where} "${name}" is not a parameter of $import (known: ${[...TOP, ...KICKOFF].join(', ')})`);
    if (KICKOFF.has(name)) {
      if (!REPEATABLE.has(name) && kickoff.some(([n]) => n === name)) throw bad(`${where} "${name}" is given twice`);
      kickoff.push([name, kickoffValue(parameter, `${where} "${name}"`)]);
    } else if (name === 'input') {
      inputs.push(inputOf(parameter, `${where} "input"`));
    } else if (name === 'fileRequestHeader') {
      authorization = headerOf(parameter, `${where} "fileRequestHeader"`);
    } else if (name === 'storageDetail') {
      userPassword = storageDetailOf(parameter, `${where} "storageDetail"`) ?? userPassword;
    } else {
      if (name in fields) throw bad(`${where} "${name}" is given twice`);
      fields[name] = stringValue(parameter, `${where} "${name}"`);
    }
  }
  if (userPassword !== undefined && authorization !== undefined) throw bad('give either storageDetail.credentialHttpBasic or an Authorization fileRequestHeader, not both');
  if (userPassword !== undefined) authorization = `Basic ${Buffer.from(userPassword).toString('base64')}`;
  if (fields.exportUrl !== undefined) return manifestImport(fields, inputs.length, authorization, kickoff);
  if (fields.exportType !== undefined) throw bad('"exportType" needs "exportUrl"');
  if (kickoff.length > 0) throw bad(`"${kickoff[0]![0]}" is a kick-off parameter: it needs "exportUrl" (exportType dynamic)`);
  if (authorization !== undefined && userPassword === undefined) throw bad('"fileRequestHeader" is for exportUrl; for "input" files use storageDetail.credentialHttpBasic');
  if (inputs.length === 0) throw bad('at least one "input" parameter (parts type and url), or "exportUrl", is required');
  const request = parseImportRequest({
    ...(fields.inputFormat !== undefined && { inputFormat: fields.inputFormat }),
    ...(fields.inputSource !== undefined && { inputSource: fields.inputSource }),
    ...(fields.mode !== undefined && { mode: fields.mode }),
    inputs,
  });
  if (authorization === undefined) return { kind: 'inputs', request };
  const origins = [...new Set(request.inputs.flatMap((input) => {
    try {
      const url = new URL(input.url);
      return url.protocol === 'http:' || url.protocol === 'https:' ? [url.origin] : [];
    } catch {
      return [];
    }
  }))];
  return { kind: 'inputs', request, credential: { origins, authorization } };
}

function manifestImport(fields: Record<string, unknown>, inputCount: number, authorization: string | undefined, kickoff: [string, string][]): ParametersImport {
  if (inputCount > 0) throw bad('give either "input" parts or "exportUrl", not both');
  const exportUrl = fields.exportUrl as string;
  let url: URL;
  try {
    url = new URL(exportUrl);
  } catch {
    throw bad(`"exportUrl" "${exportUrl}" is not a valid URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw bad(`"exportUrl" "${exportUrl}" must be an http(s):// URL`);
  // never echoed: it is a password; the URL would be stored with the session
  if (url.username !== '' || url.password !== '') throw bad('"exportUrl" must not carry credentials (user:password@); give them as storageDetail.credentialHttpBasic');
  const type = fields.exportType ?? 'dynamic';
  if (type !== 'static' && type !== 'dynamic') throw bad(`"exportType" "${String(type)}" must be static or dynamic`);
  const kept: Record<string, string> = {};
  for (const key of ['inputFormat', 'inputSource', 'mode']) if (typeof fields[key] === 'string') kept[key] = fields[key] as string;
  if (type === 'static') {
    if (kickoff.length > 0) throw bad(`"${kickoff[0]![0]}" is a kick-off parameter: exportType static reads a finished manifest, which takes none`);
    return { kind: 'manifest', exportUrl, authorization, fields: kept };
  }
  for (const name of KICKOFF) {
    if (url.searchParams.has(name) && kickoff.some(([n]) => n === name)) throw bad(`"${name}" is given both in "exportUrl" and as a parameter`);
  }
  const since = kickoff.find(([n]) => n === '_since')?.[1] ?? url.searchParams.get('_since') ?? undefined;
  if (since !== undefined && since !== 'latest' && Number.isNaN(Date.parse(since))) {
    throw bad(`"_since" "${since}" must be an instant (2026-01-31T12:00:00Z) or "latest"`);
  }
  const sinceLatest = since === 'latest';
  let kickoffUrl = exportUrl;
  if (url.searchParams.get('_since') === 'latest') {
    url.searchParams.delete('_since');
    kickoffUrl = url.href;
  }
  return { kind: 'pull', exportUrl: kickoffUrl, authorization, fields: kept, kickoff: kickoff.filter(([n, v]) => !(n === '_since' && v === 'latest')), sinceLatest };
}

/** A kick-off parameter's value: a string, an instant, or (`patient`) a reference. */
function kickoffValue(parameter: Record<string, Json>, where: string): string {
  const value = valueOf(parameter);
  if (isPlainObject(value) && typeof value.reference === 'string' && value.reference !== '') return value.reference;
  if (typeof value !== 'string' || value === '') throw bad(`${where} must have a non-empty string value (valueString, valueInstant, valueReference)`);
  return value;
}

/** `fileRequestHeader` (headerName, headerValue): only `Authorization` is taken. */
function headerOf(parameter: Record<string, Json>, where: string): string {
  const parts = partsOf(parameter, where);
  for (const name of Object.keys(parts)) {
    if (name !== 'headerName' && name !== 'headerValue') throw bad(`${where}: part "${name}" is unknown (known: headerName, headerValue)`);
  }
  if (parts.headerName === undefined || parts.headerValue === undefined) throw bad(`${where}: parts "headerName" and "headerValue" are required`);
  const name = stringValue(parts.headerName, `${where} part "headerName"`);
  if (name.toLowerCase() !== 'authorization') throw bad(`${where}: header "${name}" is not supported (only Authorization)`);
  const value = valueOf(parts.headerValue);
  if (typeof value !== 'string' || value === '') throw bad(`${where}: part "headerValue" must be a non-empty string`);
  return value;
}

function inputOf(parameter: Record<string, Json>, where: string): { type?: string; url: string } {
  const parts = partsOf(parameter, where);
  const type = parts.type === undefined ? undefined : stringValue(parts.type, `${where} part "type"`);
  if (parts.url === undefined) throw bad(`${where}: part "url" is required`);
  const url = stringValue(parts.url, `${where} part "url"`);
  for (const name of Object.keys(parts)) {
    if (name !== 'type' && name !== 'url') throw bad(`${where}: part "${name}" is unknown (known: type, url)`);
  }
  if (type !== undefined && !isFhirType(type)) throw bad(`${where}: part "type" "${type}" is not a FHIR R4 resource type`);
  if (!/^https?:\/\//i.test(url)) throw bad(`${where}: part "url" "${url}" must be an http(s):// URL`);
  try {
    new URL(url);
  } catch {
    throw bad(`${where}: part "url" "${url}" is not a valid URL`);
  }
  return { ...(type !== undefined && { type }), url };
}

/** The `user:password` of `credentialHttpBasic`, if given; checks `type`. */
function storageDetailOf(parameter: Record<string, Json>, where: string): string | undefined {
  const parts = partsOf(parameter, where);
  for (const name of Object.keys(parts)) {
    if (name !== 'type' && name !== 'credentialHttpBasic' && !IGNORED_STORAGE_PARTS.has(name)) {
      throw bad(`${where}: part "${name}" is unknown (known: type, credentialHttpBasic)`);
    }
  }
  if (parts.type !== undefined) {
    const type = stringValue(parts.type, `${where} part "type"`);
    if (!STORAGE_TYPES.has(type)) throw bad(`${where}: part "type" "${type}" is not supported (use https)`);
  }
  if (parts.credentialHttpBasic === undefined) return undefined;
  const value = parts.credentialHttpBasic;
  const text = isPlainObject(value) ? valueOf(value) : undefined;
  // the value is never echoed: it is a password
  if (typeof text !== 'string' || !text.includes(':')) throw bad(`${where}: part "credentialHttpBasic" must be a string "user:password"`);
  return text;
}

function partsOf(parameter: Record<string, Json>, where: string): Record<string, Record<string, Json>> {
  if (!Array.isArray(parameter.part)) throw bad(`${where} must have "part"s`);
  const parts: Record<string, Record<string, Json>> = {};
  for (const [j, part] of parameter.part.entries()) {
    if (!isPlainObject(part) || typeof part.name !== 'string') throw bad(`${where} part[${j}] must be an object with a "name"`);
    if (part.name in parts) throw bad(`${where}: part "${part.name}" is given twice`);
    parts[part.name] = part;
  }
  return parts;
}

function stringValue(parameter: Record<string, Json>, where: string): string {
  const value = valueOf(parameter);
  if (typeof value !== 'string' || value === '') throw bad(`${where} must have a non-empty string value (valueString, valueCode, valueUri, valueUrl)`);
  return value;
}

function valueOf(parameter: Record<string, Json>): Json | undefined {
  const key = Object.keys(parameter).find((k) => k.startsWith('value'));
  return key === undefined ? undefined : parameter[key];
}

function bad(what: string) {
  return invalid(`Invalid $import Parameters: ${what}`);
}
