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

export interface ParametersImport {
  request: ImportRequest;
  credential?: SourceCredential;
}

const TOP = new Set(['inputFormat', 'inputSource', 'mode', 'storageDetail', 'input']);
/** HAPI's `https`, Microsoft's and the Bulk Data IG's names for "fetch the url". */
const STORAGE_TYPES = new Set(['https', 'http', 'url']);
/** Parts HAPI sends that change nothing here (fhirhose sizes its own batches). */
const IGNORED_STORAGE_PARTS = new Set(['maxBatchResourceCount']);
const LATER = new Set(['exportUrl', 'exportType', 'fileRequestHeader', '_since', '_type']);

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
  for (const [i, parameter] of parameters.entries()) {
    const where = `parameter[${i}]`;
    if (!isPlainObject(parameter) || typeof parameter.name !== 'string') throw bad(`${where} must be an object with a "name"`);
    const name = parameter.name;
    if (LATER.has(name)) throw bad(`${where} "${name}" (ping and pull from another server) is not supported yet; list the files as "input" parts`);
    if (!TOP.has(name)) throw bad(`${where} "${name}" is not a parameter of $import (known: ${[...TOP].join(', ')})`);
    if (name === 'input') {
      inputs.push(inputOf(parameter, `${where} "input"`));
    } else if (name === 'storageDetail') {
      userPassword = storageDetailOf(parameter, `${where} "storageDetail"`) ?? userPassword;
    } else {
      if (name in fields) throw bad(`${where} "${name}" is given twice`);
      fields[name] = stringValue(parameter, `${where} "${name}"`);
    }
  }
  if (inputs.length === 0) throw bad('at least one "input" parameter (parts type and url) is required');
  const request = parseImportRequest({
    ...(fields.inputFormat !== undefined && { inputFormat: fields.inputFormat }),
    ...(fields.inputSource !== undefined && { inputSource: fields.inputSource }),
    ...(fields.mode !== undefined && { mode: fields.mode }),
    inputs,
  });
  if (userPassword === undefined) return { request };
  const origins = [...new Set(request.inputs.flatMap((input) => {
    try {
      const url = new URL(input.url);
      return url.protocol === 'http:' || url.protocol === 'https:' ? [url.origin] : [];
    } catch {
      return [];
    }
  }))];
  return { request, credential: { origins, authorization: `Basic ${Buffer.from(userPassword).toString('base64')}` } };
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
