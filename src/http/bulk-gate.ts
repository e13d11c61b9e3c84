/**
 * The cap on concurrent bulk operations (SPEC §10 "two connection pools"): `$dump`, `$dump-sql`
 * and `$load` requests take a slot for as long as their response body streams. At most
 * FHIRHOSE_BULK_CONCURRENCY run at once; up to FHIRHOSE_BULK_QUEUE more wait, each for at most
 * FHIRHOSE_BULK_QUEUE_WAIT_MS; past that a request gets 503 with `Retry-After` at once. Waiting
 * costs nothing but the socket: no connection is taken before the slot.
 *
 * Bodies are also guarded against slow readers (streams/slow-reader.ts). The slot is released
 * when the body ends, fails, is cancelled or is cut, never before: a slow reader keeps its slot
 * until it is cut, which is what bounds the connections the bulk pool lends.
 *
 * `$export` file downloads use the same gate over slots of their own (FHIRHOSE_DOWNLOAD_CONCURRENCY,
 * `names` below): they hold a file, not a database connection, so they must not queue behind dumps.
 */
import type { MiddlewareHandler } from 'hono';
import { OperationOutcomeError } from '../fhir/outcome.ts';
import { guardSlowReader } from '../streams/slow-reader.ts';
import type { Priority } from './priority.ts';

export interface SlotLimits {
  concurrency: number;
  queue: number;
  queueWaitMs: number;
  /** What the 503 names: the work and its variables (default: the bulk cap's). */
  names?: SlotNames;
}

export interface SlotNames {
  work: string;
  concurrency: string;
  queue: string;
  queueWaitMs: string;
}

const BULK_NAMES: SlotNames = {
  work: 'bulk operations', concurrency: 'FHIRHOSE_BULK_CONCURRENCY', queue: 'FHIRHOSE_BULK_QUEUE', queueWaitMs: 'FHIRHOSE_BULK_QUEUE_WAIT_MS',
};

export interface BulkGateOptions {
  slowReader: { bytesPerSec: number; windowMs: number };
  log(line: string): void;
  /** Interactive requests first: the body waits for its turn before each chunk (http/priority.ts). */
  priority?: Priority;
}

const RETRY_AFTER_SECONDS = 5;

/**
 * A download waits at most this long for a slot: its 503 + Retry-After comes well before a
 * client's connect timeout (a fhirhose pull's FHIRHOSE_SOURCE_CONNECT_TIMEOUT is 10 s), so the
 * client retries rather than failing on a timeout.
 */
export const DOWNLOAD_QUEUE_WAIT_MS = 5_000;

/** The slots of `$export` file downloads: `concurrency` stream, as many more wait briefly. */
export function downloadLimits(concurrency: number): SlotLimits {
  return {
    concurrency,
    queue: concurrency,
    queueWaitMs: DOWNLOAD_QUEUE_WAIT_MS,
    names: {
      work: '$export file downloads',
      concurrency: 'FHIRHOSE_DOWNLOAD_CONCURRENCY',
      queue: 'as many as FHIRHOSE_DOWNLOAD_CONCURRENCY may wait',
      queueWaitMs: 'the longest a download waits',
    },
  };
}

export interface BulkSlots {
  /** Resolves with the release function once a slot is free; throws 503 past the queue. */
  acquire(signal?: AbortSignal): Promise<() => void>;
  readonly running: number;
  readonly waiting: number;
}

export function bulkSlots(options: SlotLimits): BulkSlots {
  let running = 0;
  const waiters: (() => void)[] = [];
  const names = options.names ?? BULK_NAMES;
  const busy = (why: string) => new OperationOutcomeError('busy',
    `The server is running ${options.concurrency} ${names.work}, its limit (${names.concurrency}), ${why}; retry in ${RETRY_AFTER_SECONDS} s`,
    { headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } });

  function releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = waiters.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else running--;
    };
  }

  return {
    get running() { return running; },
    get waiting() { return waiters.length; },
    async acquire(signal) {
      if (running < options.concurrency) {
        running++;
        return releaser();
      }
      if (waiters.length >= options.queue || options.queueWaitMs === 0) {
        throw busy(`and ${waiters.length} more are waiting (${names.queue})`);
      }
      await new Promise<void>((resolve, reject) => {
        const leave = (error: unknown) => {
          const at = waiters.indexOf(wake);
          if (at >= 0) waiters.splice(at, 1);
          clearTimeout(timer);
          reject(error);
        };
        const wake = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', gone);
          resolve();
        };
        const gone = () => leave(signal!.reason);
        const timer = setTimeout(() => leave(busy(`and none was free after ${options.queueWaitMs} ms of waiting (${names.queueWaitMs})`)), options.queueWaitMs);
        signal?.addEventListener('abort', gone, { once: true });
        waiters.push(wake);
      });
      return releaser();
    },
  };
}

/** Hono middleware for the bulk routes: a slot per request, held until its body is done. */
export function bulkGate(slots: BulkSlots, options: BulkGateOptions): MiddlewareHandler {
  return async (c, next) => {
    options.priority?.markBulk(c);
    const release = await slots.acquire(c.req.raw.signal);
    let handedOver = false;
    try {
      await next();
      const res = c.res;
      // Hono answers HEAD by running the GET route and dropping its body unread: never pulled,
      // that body would hold its slot (and a $dump its connection) for ever, the slow-reader
      // clock never starting. So it is cancelled here and the slot goes back at once.
      if (c.req.method === 'HEAD') {
        await res.body?.cancel().catch(() => {});
        c.res = new Response(null, { status: res.status, headers: res.headers });
        return;
      }
      if (res.body) {
        const what = `${c.req.method} ${new URL(c.req.url).pathname}`;
        const body = guardSlowReader(res.body, {
          ...options.slowReader,
          onSlow: (message) => options.log(`${what}: ${message}`),
          onEnd: release,
          beforeRead: options.priority?.turn,
        });
        handedOver = true;
        c.res = new Response(body, { status: res.status, headers: res.headers });
      }
    } finally {
      if (!handedOver) release();
    }
  };
}
