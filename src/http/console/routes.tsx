/**
 * The console's routes (SPEC §14), behind the same auth as the API: the page, its script, and one
 * Server-Sent Events stream per page. The stream is driven by NOTIFY (an import batch committed,
 * an export's progress, an action, new work): it re-reads only the job named by the notification,
 * at most every 250 ms each, and only when the page shows it or could show it:
 * - a job already on the page (`keys`, sent by the page) is always updated, even when its new
 *   state no longer matches the page's filter (it stays until the page is reloaded);
 * - a job not on the page is sent only to page 1 (the newest), and only when it matches the
 *   page's `state` filter: a new job appears at the top, and the script drops the last row so the
 *   page keeps its size. Pages 2+ never gain rows live; reloading shows the new order.
 * - a job that is gone (a DELETEd export) is sent as `gone`.
 */
import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { OperationContext } from '../../operations/context.ts';
import { consoleItem, consoleList, PAGE_SIZE, parseConsoleQuery } from '../../operations/console.ts';
import { invalid } from '../../fhir/outcome.ts';
import { subscribe, type Subscription } from '../../storage/notify.ts';
import { cardOf } from './cards.ts';
import { ConsolePage } from './page.tsx';
import { CONSOLE_SCRIPT } from './script.ts';

const THROTTLE_MS = 250;
const HEARTBEAT_MS = 15_000;
const RETRY_MS = 1000;
const KEY = /^(import:[A-Za-z0-9\-.]{1,64}|export:[A-Za-z0-9-]{1,64})$/;
/** Keys a stream remembers: the page's, plus jobs that appeared on page 1 since it loaded. */
const MAX_SHOWN = 1000;
const CSP = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

export function consoleRoutes(api: Hono<any>, ctxOf: (c: any) => OperationContext): void {
  api.get('/console', async (c) => {
    const ctx = ctxOf(c);
    const list = await consoleList(ctx, parseConsoleQuery(new URL(c.req.url).searchParams));
    c.header('Content-Security-Policy', CSP);
    c.header('Cache-Control', 'no-store');
    return c.html('<!doctype html>' + String(<ConsolePage list={list} cards={list.items.map(cardOf)} />));
  });
  api.get('/console/app.js', (c) => c.body(CONSOLE_SCRIPT, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-store' }));
  api.get('/console/events', (c) => {
    const ctx = ctxOf(c);
    const query = new URL(c.req.url).searchParams;
    const keys = query.get('keys');
    query.delete('keys');
    const { page, state } = parseConsoleQuery(query);
    const shown = new Set((keys ?? '').split(',').filter(Boolean));
    if (shown.size > PAGE_SIZE * 2) throw invalid(`Console events: ${shown.size} keys, at most ${PAGE_SIZE * 2}`);
    for (const key of shown) if (!KEY.test(key)) throw invalid(`Console events: key ${JSON.stringify(key)} is not import:<id> or export:<id>`);
    const signal = c.req.raw.signal;
    return streamSSE(c, async (stream) => {
      const due = new Map<string, ReturnType<typeof setTimeout>>();
      const update = async (key: string) => {
        const item = await consoleItem(ctx, key);
        if (stream.aborted) return;
        if (!item) {
          if (shown.delete(key)) await stream.writeSSE({ event: 'gone', data: JSON.stringify({ key }) });
          return;
        }
        if (!shown.has(key)) {
          if (page !== 1 || (state !== undefined && item.view.status !== state) || shown.size >= MAX_SHOWN) return;
          shown.add(key);
        }
        await stream.writeSSE({ event: 'job', data: JSON.stringify(cardOf(item)) });
      };
      // one read per key at a time, so an older read never overwrites a newer one on the page;
      // a notification during a read runs one more read after it
      const busy = new Set<string>();
      const again = new Set<string>();
      const run = (key: string) => {
        if (busy.has(key)) { again.add(key); return; }
        busy.add(key);
        void update(key).then(() => false, () => true).then((failed) => {
          busy.delete(key);
          if (stream.aborted) return;
          // a failed read (the database busy or away) is tried again a second later
          if (failed) {
            again.delete(key);
            setTimeout(() => notified(key), RETRY_MS);
          }
          else if (again.delete(key)) notified(key);
        });
      };
      const notified = (payload: string) => {
        const key = payload.startsWith('export:') || payload.startsWith('import:') ? payload : `import:${payload}`;
        if (stream.aborted || due.has(key) || !KEY.test(key) || (page !== 1 && !shown.has(key))) return;
        due.set(key, setTimeout(() => {
          due.delete(key);
          run(key);
        }, THROTTLE_MS));
      };
      const subs: Subscription[] = [];
      for (const channel of ['fhirhose_progress', 'fhirhose_actions', 'fhirhose_jobs'] as const) subs.push(await subscribe(ctx.sql, channel, notified));
      await stream.writeSSE({ event: 'ready', data: '{}' });
      // what changed between the page's render (or the last stream's end) and this subscription
      for (const key of [...shown]) run(key);
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
