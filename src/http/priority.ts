/**
 * Interactive requests go before bulk streams (SPEC §10: "`GET /Patient/<id>` still answers at
 * once" while bulk work runs). The two pools keep bulk work off the API's connections, but not off
 * the server's one event loop nor the database's CPU: with eight `$dump`s streaming at full speed a
 * GET waited 1.4 s at p50 and 14.8 s at p99 (BENCHMARKS.md "Limits"; the event loop lagged up to
 * 1.6 s), and a plain yield between chunks only spread that wait over every GET (p50 9 → 176 ms).
 *
 * So a bulk body asks for its `turn()` before each chunk: while an interactive request (anything
 * but the bulk routes) is in its handler, the bulk streams wait, so the event loop and the
 * PostgreSQL backends of their COPYs (blocked on a full socket soon after) leave the CPU to it
 * (p50 0.35 s, p99 2.1 s, same run conditions). Otherwise the turn is a yield to the event loop,
 * so a new request is read between chunks rather than after a run of them.
 * Bounded both ways: a bulk stream waits at most MAX_PAUSE_MS per chunk, so a flood of GETs slows
 * bulk work but never stops it, and a request still in its handler after PRIORITY_MS (a trickled
 * upload, a long search) stops counting, so one slow client cannot slow every dump for long.
 */
import type { Context, MiddlewareHandler } from 'hono';

const MAX_PAUSE_MS = 1_000;
const PRIORITY_MS = 2_000;

export interface Priority {
  /** Middleware for every route: the request is interactive until its handler returns. */
  track: MiddlewareHandler;
  /** The bulk gate's call: this request is bulk work, not interactive (before it waits for a slot). */
  markBulk(c: Context): void;
  /**
   * Resolves once no interactive request younger than PRIORITY_MS is in its handler, or after
   * MAX_PAUSE_MS; at the next turn of the event loop when none is.
   */
  turn(): Promise<void>;
  /** Interactive requests in their handlers now (for tests and metrics). */
  readonly interactive: number;
}

const KEY = 'priority:leave';

export function priority(): Priority {
  const active = new Map<symbol, number>(); // request → when it started
  let changed: { promise: Promise<void>; resolve(): void } | undefined;
  const leave = (token: symbol) => {
    if (!active.delete(token)) return;
    if (active.size === 0 && changed) {
      changed.resolve();
      changed = undefined;
    }
  };
  /** The time until the youngest interactive request stops counting; 0 when none counts. */
  const priorityLeft = (now: number): number => {
    let left = 0;
    for (const since of active.values()) left = Math.max(left, since + PRIORITY_MS - now);
    return left;
  };

  return {
    get interactive() { return active.size; },
    track: async (c, next) => {
      const token = Symbol('request');
      active.set(token, performance.now());
      c.set(KEY, () => leave(token));
      try {
        await next();
      } finally {
        leave(token);
      }
    },
    markBulk(c) {
      (c.get(KEY) as (() => void) | undefined)?.();
    },
    turn() {
      if (active.size === 0) return new Promise<void>((resolve) => setImmediate(resolve));
      const started = performance.now();
      const left = Math.min(priorityLeft(started), MAX_PAUSE_MS);
      if (left <= 0) return new Promise<void>((resolve) => setImmediate(resolve));
      changed ??= (() => {
        let resolve!: () => void;
        const promise = new Promise<void>((r) => { resolve = r; });
        return { promise, resolve };
      })();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, left); });
      return Promise.race([changed.promise, timeout]).then(() => clearTimeout(timer));
    },
  };
}
