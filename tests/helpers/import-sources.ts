/**
 * A real local HTTP server for `$import` sources: whole files, files that trickle (to hold a
 * session `active`), files that hang after some bytes until released, files whose connection
 * drops after N bytes, and plain HTTP errors. Shared by the $import tests.
 */
import type { TestServer } from './server.ts';

export interface SourceBehaviour {
  /** Answer this status with no body. */
  status?: number;
  /** Send `bytes` every `everyMs` milliseconds instead of all at once. */
  trickle?: { bytes: number; everyMs: number };
  /** After this many bytes, error the body: the client sees the connection drop mid-way. */
  dropAfter?: number;
  /** After this many bytes, send nothing more until `release(path)` (or the server stops). */
  holdAfter?: number;
  /** Answer 302 with this Location (absolute, or a path on this server). */
  redirect?: string;
  /** Send no Content-Length (a chunked body of unknown size). */
  unsized?: boolean;
}

export interface SourceServer {
  url(path: string): string;
  set(path: string, body: string | Uint8Array, behaviour?: SourceBehaviour): void;
  release(path: string): void;
  /** Requests served per path: a resumed input fetches its source again. */
  hits(path: string): number;
  /** How each streamed body of `path` ended so far: sent to its end, or cancelled by the client. */
  endings(path: string): ('complete' | 'cancelled')[];
  stop(): Promise<void>;
}

export function startSourceServer(): SourceServer {
  const files = new Map<string, { body: Uint8Array; behaviour: SourceBehaviour }>();
  const hits = new Map<string, number>();
  const waiting = new Map<string, (() => void)[]>();
  const released = new Set<string>();
  const endings = new Map<string, ('complete' | 'cancelled')[]>();
  const ended = (path: string, how: 'complete' | 'cancelled') => endings.set(path, [...(endings.get(path) ?? []), how]);
  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    idleTimeout: 0,
    // A dropped connection is on purpose: development mode would print its stack every time.
    development: false,
    fetch(request) {
      const path = new URL(request.url).pathname;
      hits.set(path, (hits.get(path) ?? 0) + 1);
      const file = files.get(path);
      if (!file) return new Response('not found', { status: 404 });
      const { body, behaviour } = file;
      if (behaviour.status) return new Response(null, { status: behaviour.status });
      if (behaviour.redirect) return new Response(null, { status: 302, headers: { location: behaviour.redirect } });
      if (request.method === 'HEAD') return new Response(null, { headers: behaviour.unsized ? {} : { 'content-length': String(body.length) } });
      if (!behaviour.trickle && behaviour.dropAfter === undefined && behaviour.holdAfter === undefined && !behaviour.unsized) return new Response(body as Uint8Array<ArrayBuffer>);
      let sent = 0;
      const step = behaviour.trickle?.bytes ?? 64 * 1024;
      const stream = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (behaviour.dropAfter !== undefined && sent >= behaviour.dropAfter) {
            controller.error(new Error('connection dropped on purpose'));
            return;
          }
          if (behaviour.holdAfter !== undefined && sent >= behaviour.holdAfter && !released.has(path)) {
            await new Promise<void>((resolve) => waiting.set(path, [...(waiting.get(path) ?? []), resolve]));
          }
          if (behaviour.trickle && sent > 0) await Bun.sleep(behaviour.trickle.everyMs);
          let end = Math.min(body.length, sent + step);
          if (behaviour.dropAfter !== undefined) end = Math.min(end, behaviour.dropAfter);
          if (behaviour.holdAfter !== undefined && !released.has(path) && sent < behaviour.holdAfter) end = Math.min(end, behaviour.holdAfter);
          if (end <= sent) {
            ended(path, 'complete');
            return controller.close();
          }
          controller.enqueue(body.subarray(sent, end));
          sent = end;
        },
        cancel() { ended(path, 'cancelled'); },
      }, { highWaterMark: 0 });
      return new Response(stream, { headers: behaviour.unsized ? {} : { 'content-length': String(body.length) } });
    },
  });
  return {
    url: (path) => `http://127.0.0.1:${server.port}${path}`,
    set(path, body, behaviour = {}) {
      files.set(path, { body: typeof body === 'string' ? new TextEncoder().encode(body) : body, behaviour });
      released.delete(path);
    },
    release(path) {
      released.add(path);
      for (const resolve of waiting.get(path) ?? []) resolve();
      waiting.delete(path);
    },
    hits: (path) => hits.get(path) ?? 0,
    endings: (path) => endings.get(path) ?? [],
    async stop() {
      for (const path of waiting.keys()) this.release(path);
      await server.stop(true);
    },
  };
}

/** `n` Patients as ndjson, ids `<prefix>-1` … `<prefix>-n`, each a little different. */
export function patients(n: number, prefix = 'p', from = 1): string {
  let out = '';
  for (let i = from; i < from + n; i++) {
    out += JSON.stringify({ resourceType: 'Patient', id: `${prefix}-${i}`, name: [{ family: `Family${i}`, given: ['Given', String(i % 97)] }], birthDate: `19${String(i % 100).padStart(2, '0')}-01-01` }) + '\n';
  }
  return out;
}

export async function startImport(server: TestServer, body: Record<string, unknown>): Promise<Response> {
  return server.request('/$import', { method: 'POST', json: body });
}

export async function status(server: TestServer, id: string): Promise<Record<string, any>> {
  const res = await server.request(`/BulkImportStatus/${id}`);
  if (res.status !== 200) throw new Error(`GET /BulkImportStatus/${id} answered ${res.status}: ${await res.text()}`);
  return res.json() as Promise<Record<string, any>>;
}

/** Polls the session until `test` holds; fails with the last session seen. */
export async function waitFor(
  server: TestServer,
  id: string,
  test: (session: Record<string, any>) => boolean,
  timeoutMs = 60_000,
): Promise<Record<string, any>> {
  const deadline = Date.now() + timeoutMs;
  let last: Record<string, any> = {};
  while (Date.now() < deadline) {
    last = await status(server, id);
    if (test(last)) return last;
    await Bun.sleep(25);
  }
  throw new Error(`session ${id} did not reach the expected state in ${timeoutMs} ms; last: ${JSON.stringify(last).slice(0, 2000)}`);
}

export async function count(server: Pick<TestServer, 'sql'>, table: string): Promise<number> {
  const [row] = await server.sql.unsafe(`select count(*)::int as n from "${table}"`);
  return row!.n as number;
}
