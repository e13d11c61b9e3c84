/**
 * The console's routes (SPEC §14), behind the same auth as the API: the page, its script, and one
 * Server-Sent Events stream per page. The stream is driven by NOTIFY (a batch committed, an action,
 * new work): it re-reads only the session named by the notification, at most every 250 ms each.
 */
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { OperationContext } from '../../operations/context.ts';
import { listImportSessions, readImportSession } from '../../operations/import.ts';
import { subscribe, type Subscription } from '../../storage/notify.ts';
import { ConsolePage } from './page.tsx';
import { CONSOLE_SCRIPT } from './script.ts';

const THROTTLE_MS = 250;
const HEARTBEAT_MS = 15_000;
const CSP = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

export function consoleRoutes(api: Hono<any>, ctxOf: (c: any) => OperationContext): void {
  api.get('/console', async (c) => {
    const sessions = await listImportSessions(ctxOf(c));
    sessions.sort((a, b) => String(b.startedAt ?? '').localeCompare(String(a.startedAt ?? '')));
    c.header('Content-Security-Policy', CSP);
    c.header('Cache-Control', 'no-store');
    return c.html('<!doctype html>' + String(<ConsolePage sessions={sessions} />));
  });
  api.get('/console/app.js', (c) => c.body(CONSOLE_SCRIPT, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-store' }));
  api.get('/console/events', (c) => {
    const ctx = ctxOf(c);
    const signal = c.req.raw.signal;
    return streamSSE(c, async (stream) => {
      const due = new Map<string, ReturnType<typeof setTimeout>>();
      const send = (id: string) => {
        if (due.has(id) || !/^[A-Za-z0-9\-.]{1,64}$/.test(id)) return;
        due.set(id, setTimeout(async () => {
          due.delete(id);
          const session = await readImportSession(ctx, id).catch(() => undefined); // not a session (an export job): ignored
          if (session && !stream.aborted) await stream.writeSSE({ event: 'session', data: JSON.stringify(session) }).catch(() => {});
        }, THROTTLE_MS));
      };
      const subs: Subscription[] = [];
      for (const channel of ['fhirhose_progress', 'fhirhose_actions', 'fhirhose_jobs'] as const) subs.push(await subscribe(ctx.sql, channel, send));
      await stream.writeSSE({ event: 'ready', data: '{}' });
      await new Promise<void>((resolve) => {
        const beat = setInterval(() => void stream.writeSSE({ event: 'ping', data: '{}' }).catch(resolve), HEARTBEAT_MS);
        const end = () => { clearInterval(beat); resolve(); };
        stream.onAbort(end);
        signal.addEventListener('abort', end, { once: true });
      });
      for (const t of due.values()) clearTimeout(t);
      await Promise.all(subs.map((s) => s.unlisten().catch(() => {})));
    });
  });
}
