/** Responses are JSON, or YAML when `Accept` asks for YAML (SPEC §1). */
import type { Context } from 'hono';
import YAML from 'yaml';
import { outcome, OperationOutcomeError, type OutcomeCode } from '../fhir/outcome.ts';

export function wantsYaml(accept: string | undefined): boolean {
  return !!accept && /(text|application)\/(x-)?yaml/i.test(accept);
}

export function respond(c: Context, status: number, body: unknown, headers: Record<string, string> = {}): Response {
  const yaml = wantsYaml(c.req.header('accept'));
  const text = yaml ? YAML.stringify(body) : JSON.stringify(body);
  return new Response(text, {
    status,
    headers: { 'Content-Type': yaml ? 'text/yaml; charset=utf-8' : 'application/json; charset=utf-8', ...headers },
  });
}

/** The single error renderer (STYLE §3): OperationOutcome with `message`, no stack, no SQL. */
export function renderError(c: Context, err: unknown, log: (line: string) => void): Response {
  if (err instanceof OperationOutcomeError) return respond(c, err.status, outcome(err.code, err.message), err.headers);
  const code: OutcomeCode = 'exception';
  log(`unexpected error on ${c.req.method} ${new URL(c.req.url).pathname}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  return respond(c, 500, outcome(code, 'Internal server error; the server log has the details'));
}
