import fs from 'node:fs';
import { createRequire } from 'node:module';
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import { isFhirType, isKnownType } from './types.ts';

interface FhirSchema {
  $schema: string;
  definitions: Record<string, Record<string, unknown>>;
}

let ajv: Ajv | undefined;
const validators = new Map<string, ValidateFunction>();

/** HL7's R4 JSON schema, vendored with its licence note (schema/README.md). */
export const FHIR_SCHEMA_PATH = new URL('./schema/fhir.schema.json', import.meta.url);

/**
 * Loads the official R4 schema into ajv on first use. Lazy because the first validation costs
 * 1.9–3.6 s (Bun 1.4.5, 2 busy cores: ~0.15 s to parse and add the 3.3 MB schema, the rest to
 * compile the first type, which pulls in every type through `contained`'s 146-way
 * `ResourceList`); each later type then compiles in ~10 ms. Validating is then ~40–65k Synthea
 * Patients/s. The server calls this only in its validation worker (operations/struct-check.ts),
 * so the compile never holds the event loop.
 */
function schemaAjv(): Ajv {
  if (ajv) return ajv;
  const require = createRequire(import.meta.url);
  const schema = JSON.parse(fs.readFileSync(FHIR_SCHEMA_PATH, 'utf8')) as FhirSchema;
  const instance = new Ajv({ strict: false, allErrors: false });
  instance.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json') as object);
  // The schema names itself with draft-04 `id`, which ajv 8 refuses; only `definitions` is needed.
  instance.addSchema({ $schema: schema.$schema, $id: 'fhir', definitions: objectTyped(schema.definitions) });
  ajv = instance;
  return instance;
}

/**
 * The official schema gives complex types `properties` but no `type`, so a string passes where a
 * CodeableConcept or HumanName belongs (`"code": "1234-5"` is valid to it). Every definition with
 * `properties` describes a JSON object, so say so.
 */
function objectTyped(definitions: FhirSchema['definitions']): FhirSchema['definitions'] {
  const out: FhirSchema['definitions'] = {};
  for (const [name, definition] of Object.entries(definitions)) {
    out[name] = definition.properties && !definition.type ? { type: 'object', ...definition } : definition;
  }
  return out;
}

function validatorOf(type: string): ValidateFunction {
  let validate = validators.get(type);
  if (!validate) {
    validate = schemaAjv().getSchema(`fhir#/definitions/${type}`);
    if (!validate) throw new Error(`FHIR schema has no definition for ${type}`);
    validators.set(type, validate);
  }
  return validate;
}

/**
 * Validates a resource against the official FHIR R4 JSON schema of its own `resourceType`
 * (SPEC §7 `checks: struct`). `id` and `meta` are optional, as the schema has them.
 * Returns null when valid, otherwise one sentence naming the path and the value, e.g.
 * `Patient.birthDate: "1990-13-45" does not match the FHIR date pattern`.
 * The first call compiles the schema (2–3.5 s).
 */
export function validateStruct(resource: unknown): string | null {
  return check(resource, '');
}

function check(resource: unknown, at: string): string | null {
  const prefix = at ? `${at}: ` : '';
  if (!isObject(resource)) return `${prefix}resource is not a JSON object`;
  const type = resource.resourceType;
  if (type === undefined) return `${prefix}resource has no resourceType`;
  if (typeof type !== 'string' || !isFhirType(type)) {
    return `${prefix}unknown resourceType ${show(type)}${isKnownType(String(type)) ? ' (not a FHIR R4 resource)' : ''}`;
  }
  const validate = validatorOf(type);
  if (validate(resource)) return null;
  // With allErrors off ajv stops at the first failure, which is the last error: earlier ones
  // are only the failed branches of a `oneOf`.
  const error = validate.errors?.at(-1);
  return error ? describe(resource, at || type, error) : `${at || type}: invalid`;
}

function describe(resource: Record<string, unknown>, root: string, error: ErrorObject): string {
  const { path, value } = locate(resource, root, error.instancePath);
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'additionalProperties':
      return `${path}: unknown field ${show(params.additionalProperty)}`;
    case 'required':
      return `${path}: missing required field ${show(params.missingProperty)}`;
    case 'type':
      return `${path}: ${show(value)} is not ${article(String(params.type))}`;
    case 'pattern': {
      const fhirType = /^#\/definitions\/([A-Za-z]+)\/pattern$/.exec(error.schemaPath)?.[1];
      return fhirType
        ? `${path}: ${show(value)} does not match the FHIR ${fhirType} pattern`
        : `${path}: ${show(value)} does not match the pattern ${String(params.pattern)}`;
    }
    case 'enum':
      return `${path}: ${show(value)} is not one of ${(params.allowedValues as unknown[]).join(', ')}`;
    case 'const':
      return `${path}: ${show(value)} must be ${show(params.allowedValue)}`;
    case 'oneOf':
      // A nested resource (`contained`, `Bundle.entry.resource`): no branch of the 146-way
      // ResourceList matched, so explain it against its own type instead.
      return check(value, path) ?? `${path}: ${show(value)} ${error.message ?? 'is invalid'}`;
    default:
      return `${path}: ${show(value)} ${error.message ?? 'is invalid'}`;
  }
}

/** Turns ajv's JSON pointer into a FHIR-style path (`Patient.name[0].given[1]`) and its value. */
function locate(resource: unknown, root: string, pointer: string): { path: string; value: unknown } {
  let path = root;
  let value = resource;
  if (pointer === '') return { path, value };
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (Array.isArray(value)) {
      path += `[${key}]`;
      value = value[Number(key)];
    } else {
      path += `.${key}`;
      value = isObject(value) ? value[key] : undefined;
    }
  }
  return { path, value };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/** The offending value as JSON, cut short so one huge value cannot flood an error report. */
function show(value: unknown): string {
  const json = value === undefined ? 'undefined' : JSON.stringify(value);
  return json.length > 80 ? `${json.slice(0, 77)}...` : json;
}

// `Type/id` or `Type/id/_history/vid`, with the FHIR id syntax. Absolute URLs, `urn:`,
// `#fragment` and conditional `Type?query` references cannot match.
const LITERAL_REFERENCE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

/**
 * The distinct literal relative references (`Type/id`, version dropped) anywhere in a resource,
 * contained resources included, for `checks: refs` (SPEC §7). Only types fhirhose stores count;
 * absolute URLs, `urn:uuid:`/`urn:oid:`, `#contained` and conditional `Type?query` references
 * are skipped. Iterative, so a deeply nested resource cannot overflow the stack.
 */
export function literalReferences(resource: unknown): string[] {
  const found = new Set<string>();
  const stack: unknown[] = [resource];
  while (stack.length > 0) {
    const node = stack.pop();
    if (Array.isArray(node)) {
      for (const item of node) if (typeof item === 'object' && item !== null) stack.push(item);
    } else if (typeof node === 'object' && node !== null) {
      for (const key in node) {
        const value = (node as Record<string, unknown>)[key];
        if (typeof value === 'object' && value !== null) {
          stack.push(value);
        } else if (key === 'reference' && typeof value === 'string') {
          const match = LITERAL_REFERENCE.exec(value);
          if (match && isKnownType(match[1]!)) found.add(`${match[1]}/${match[2]}`);
        }
      }
    }
  }
  return [...found];
}
