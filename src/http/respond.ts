/** Responses are JSON, or YAML when `Accept` asks for YAML (SPEC §1). */
import type { Context } from 'hono';
import YAML from 'yaml';
import { outcome, OperationOutcomeError, type OutcomeCode } from '../fhir/outcome.ts';
import { isKeptNumber } from '../fhir/json-numbers.ts';

/** YAML when `Accept` ranks a YAML type above every JSON one (q-values honoured; JSON on a tie or when absent). */
export function wantsYaml(accept: string | undefined): boolean {
  if (!accept) return false;
  let yaml = 0;
  let json = 0;
  for (const part of accept.split(',')) {
    const [type = '', ...options] = part.trim().toLowerCase().split(';');
    const qOption = options.map((o) => o.trim()).find((o) => o.startsWith('q='));
    const q = qOption ? Number(qOption.slice(2)) || 0 : 1;
    if (/^(text|application)\/(x-)?yaml$/.test(type.trim())) yaml = Math.max(yaml, q);
    else if (/^application\/(fhir\+)?json$/.test(type.trim())) json = Math.max(json, q);
  }
  return yaml > json;
}

export function respond(c: Context, status: number, body: unknown, headers: Record<string, string> = {}): Response {
  const yaml = wantsYaml(c.req.header('accept'));
  const text = yaml ? YAML.stringify(body, { customTags: [KEPT_NUMBER] }) : JSON.stringify(body);
  return new Response(text, {
    status,
    headers: { 'Content-Type': yaml ? 'text/yaml; charset=utf-8' : 'application/json; charset=utf-8', ...headers },
  });
}

/** A number kept as written (fhir/json-numbers.ts) is a YAML number with its digits: `1.50`, not `rawJSON: "1.50"`. */
const KEPT_NUMBER = {
  identify: isKeptNumber,
  default: true,
  tag: 'tag:yaml.org,2002:float',
  resolve: (text: string) => Number(text),
  stringify: (item: { value?: unknown }) => (item.value as { rawJSON: string }).rawJSON,
};

/** The single error renderer (STYLE §3): OperationOutcome with `message`, no stack, no SQL. */
export function renderError(c: Context, err: unknown, log: (line: string) => void): Response {
  if (err instanceof OperationOutcomeError) return respond(c, err.status, outcome(err.code, err.message), err.headers);
  const code: OutcomeCode = 'exception';
  log(`unexpected error on ${c.req.method} ${new URL(c.req.url).pathname}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  return respond(c, 500, outcome(code, 'Internal server error; the server log has the details'));
}
