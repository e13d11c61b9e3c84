/**
 * One middleware that sees every request end (SPEC §14): the request histogram of `/metrics` by
 * method, route pattern and status, and one structured log line (method, route, status, ms,
 * client). The route is the pattern, never the path, so ids and secrets in URLs stay out of both;
 * the `/fhir` mount shares its routes' labels.
 */
import type { Context, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import { getConnInfo } from 'hono/bun';
import { requests } from '../metrics/fhirhose.ts';

export type EventLog = (fields: Record<string, unknown>) => void;

export function observeRequests(event: EventLog): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    const method = c.req.method;
    try {
      await next();
    } finally {
      const ms = performance.now() - started;
      const route = routeOf(c);
      const status = c.res?.status ?? 500;
      requests.observe({ method, route, status: String(status) }, ms / 1000);
      const caller = c.get('caller') as { clientId?: string } | undefined;
      event({ event: 'request', method, route, status, ms: Math.round(ms * 10) / 10, client: caller?.clientId ?? null, addr: address(c) });
    }
  };
}

/** The first route (not middleware) the router matched for this request, without the /fhir mount. */
function routeOf(c: Context): string {
  let routes: { method: string; path: string }[] = [];
  try {
    routes = matchedRoutes(c);
  } catch {
    // no match result (a request the router never saw)
  }
  const route = routes.find((r) => r.method !== 'ALL' && !r.path.endsWith('*'));
  if (!route) return 'unmatched';
  return route.path.replace(/^\/fhir(?=\/|$)/, '') || '/';
}

function address(c: Context): string | null {
  try {
    return getConnInfo(c).remote.address ?? null;
  } catch {
    return null; // not served by Bun.serve (app.request in a test)
  }
}
