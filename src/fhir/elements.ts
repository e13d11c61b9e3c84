/**
 * Root elements of each R4 resource type, for `$export`'s `_elements` (SPEC §12), read from the
 * official R4 JSON schema (the one validation uses) on first use: which names exist, and which
 * the schema marks as required (always kept: a subsetted resource stays valid).
 * A choice element is asked for by its name without `[x]` (`value` keeps `valueQuantity`, …).
 */
import fs from 'node:fs';
import { FHIR_SCHEMA_PATH } from './validate.ts';

interface Definition {
  properties?: Record<string, unknown>;
  required?: string[];
}

let definitions: Record<string, Definition> | undefined;

function schema(): Record<string, Definition> {
  if (!definitions) {
    definitions = (JSON.parse(fs.readFileSync(FHIR_SCHEMA_PATH, 'utf8')) as { definitions: Record<string, Definition> }).definitions;
  }
  return definitions;
}

/** Always present in an export line whatever `_elements` says. */
const ALWAYS = ['resourceType', 'id', 'meta'];

/**
 * The stored keys that keep `element` of `type`: [] when the type has no such root element.
 * Types the schema does not describe (the server's own) accept any name.
 */
export function rootKeys(type: string, element: string): string[] {
  const definition = schema()[type];
  if (!definition?.properties) return [element];
  const names = Object.keys(definition.properties).filter((n) => !n.startsWith('_'));
  if (names.includes(element)) return [element];
  return names.filter((n) => n.startsWith(element) && /^[A-Z]/.test(n.slice(element.length)));
}

/** Required root elements of `type` besides resourceType (from the schema's `required`). */
export function requiredKeys(type: string): string[] {
  return (schema()[type]?.required ?? []).filter((k) => !ALWAYS.includes(k));
}

export function isAlwaysKept(element: string): boolean {
  return ALWAYS.includes(element);
}
