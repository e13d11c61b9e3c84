/**
 * Request bodies (SPEC §1): JSON (`application/json`, `application/fhir+json`) or YAML
 * (`text/yaml`, `application/yaml`, `application/x-yaml`), as every Aidbox example sends them.
 * Over FHIRHOSE_BODY_LIMIT → 413, another content type → 415, unparsable or nested deeper than
 * MAX_JSON_DEPTH → 400 (SPEC §10: the recursive steps after parsing would overflow their stacks).
 */
import type { Context } from 'hono';
import YAML from 'yaml';
import { OperationOutcomeError, invalid } from '../fhir/outcome.ts';
import { MAX_JSON_DEPTH, valueDeeperThan } from '../fhir/json-shape.ts';
import { keptNumber, parseKeepingNumbers } from '../fhir/json-numbers.ts';

const JSON_TYPES = new Set(['application/json', 'application/fhir+json', 'application/json-patch+json']);
const YAML_TYPES = new Set(['text/yaml', 'application/yaml', 'application/x-yaml', 'text/x-yaml']);

/**
 * `keepNumbers`: for resources, whose numbers are stored as written (`0.0` stays `0.0`,
 * fhir/json-numbers.ts); not for parameters, whose numbers the code reads as numbers.
 */
export async function readBody(c: Context, limit: number, options: { keepNumbers?: boolean } = {}): Promise<unknown> {
  const contentType = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const isJson = JSON_TYPES.has(contentType);
  const isYaml = YAML_TYPES.has(contentType);
  if (!isJson && !isYaml) {
    throw new OperationOutcomeError('unsupported-media', `Content-Type "${contentType || '(none)'}" is not supported; send application/json, application/fhir+json or text/yaml`);
  }
  const text = await readLimited(c.req.raw, limit);
  if (text.trim() === '') throw invalid('The request body is empty');
  let value: unknown;
  if (isJson) {
    try {
      value = options.keepNumbers ? parseKeepingNumbers(text) : JSON.parse(text);
    } catch (err) {
      throw invalid(`The request body is not valid JSON: ${(err as Error).message}`);
    }
  } else {
    try {
      value = options.keepNumbers ? parseYamlKeepingNumbers(text) : YAML.parse(text, { maxAliasCount: 100 });
    } catch (err) {
      if (err instanceof RangeError || /call stack/i.test((err as Error).message)) throw tooDeep();
      throw invalid(`The request body is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  if (valueDeeperThan(value)) throw tooDeep();
  return value;
}

/** YAML.parse, each number written as JSON writes it (`1.50`, `0.0`) kept as written, as in JSON bodies. */
function parseYamlKeepingNumbers(text: string): unknown {
  const doc = YAML.parseDocument(text);
  if (doc.errors.length > 0) throw doc.errors[0];
  YAML.visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value === 'number' && node.source !== undefined) node.value = keptNumber(node.value, node.source);
    },
  });
  return doc.toJS({ maxAliasCount: 100 });
}

function tooDeep(): OperationOutcomeError {
  return invalid(`The request body is nested deeper than ${MAX_JSON_DEPTH} levels`);
}

async function readLimited(request: Request, limit: number): Promise<string> {
  const tooLarge = () => new OperationOutcomeError('too-large', `The request body is larger than the limit of ${limit} bytes (FHIRHOSE_BODY_LIMIT)`);
  const declared = Number(request.headers.get('content-length') ?? NaN);
  if (declared > limit) throw tooLarge();
  if (!request.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request.body) {
    size += chunk.byteLength;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw invalid('The request body is not UTF-8 text');
  }
}
