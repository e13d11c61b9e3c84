/**
 * The `POST /$load` body (SPEC §7), parsed with zod into one typed request. A malformed body is a
 * 400 naming the first bad field with its path (`validation.enable: …`). Unknown fields are
 * refused too: a misspelt `strip_nulls` silently ignored would load different data than asked.
 */
import { z } from 'zod';
import { invalid } from '../fhir/outcome.ts';
import { requestError } from './request-issue.ts';
import { isPlainObject, type Json } from '../fhir/resource.ts';
import { isPlainIdentifier } from '../storage/staging.ts';

export interface LoadRequest {
  source: string;
  /** A named staging table, kept after the load; otherwise a temporary one. */
  tempTable?: string;
  validation: { enable: 'off' | 'on' | 'async'; checks: 'struct' | 'refs' | 'all' };
  method: 'copy' | 'insert';
  update: boolean;
  merge?: Record<string, Json>;
  stripNulls: boolean;
}

// YAML 1.1 readers turn `off`/`on` into booleans; accept them as the words the user wrote.
const enable = z.preprocess(
  (v) => (v === false ? 'off' : v === true ? 'on' : v),
  z.enum(['off', 'on', 'async']),
);

const schema = z.strictObject({
  source: z.string().min(1, 'must not be empty'),
  temp_table: z
    .string()
    .refine(isPlainIdentifier, 'must be a plain SQL identifier (letters, digits and _, not starting with a digit, at most 63)')
    .optional(),
  validation: z
    .strictObject({ enable: enable.default('off'), checks: z.enum(['struct', 'refs', 'all']).default('struct') })
    .optional(),
  method: z.enum(['copy', 'insert']).default('copy'),
  update: z.boolean().default(false),
  merge: z
    .record(z.string(), z.json())
    .refine((m) => !('id' in m) && !('resourceType' in m), 'must not set id or resourceType')
    .optional(),
  'strip-nulls': z.boolean().default(false),
});

export function parseLoadRequest(body: unknown): LoadRequest {
  if (!isPlainObject(body)) throw invalid('Invalid $load request: the body must be an object with at least "source"');
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw requestError('$load', parsed.error);
  const r = parsed.data;
  const merge = r.merge as Record<string, Json> | undefined;
  return {
    source: r.source,
    tempTable: r.temp_table,
    validation: r.validation ?? { enable: 'off', checks: 'struct' },
    method: r.method,
    update: r.update,
    merge: merge && Object.keys(merge).length > 0 ? merge : undefined,
    stripNulls: r['strip-nulls'],
  };
}
