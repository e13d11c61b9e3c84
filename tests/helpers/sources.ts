/**
 * A real local HTTP server for `$load`/`$import` sources (Bun.serve on a free port): tests put
 * bodies at paths, or make a path answer an error status or break off in the middle of the body.
 */
import { gzipSync } from 'node:zlib';
import type { Sql } from '../../src/storage/db.ts';

type Entry = { body: Uint8Array } | { status: number } | { cutAfter: Uint8Array };

export interface SourceServer {
  url(pathname: string): string;
  put(pathname: string, body: string | Uint8Array, options?: { gzip?: boolean }): string;
  fail(pathname: string, status: number): string;
  /** Sends these bytes, then drops the connection with the body unfinished. */
  cut(pathname: string, bytes: Uint8Array): string;
  requests: number;
  stop(): void;
}

export function serveSources(): SourceServer {
  const entries = new Map<string, Entry>();
  const state = { requests: 0 };
  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch(request) {
      state.requests++;
      const entry = entries.get(new URL(request.url).pathname);
      if (!entry) return new Response('not here', { status: 404 });
      if ('status' in entry) return new Response('failure', { status: entry.status });
      if ('body' in entry) return new Response(entry.body);
      const bytes = entry.cutAfter;
      return new Response(new ReadableStream<Uint8Array>({
        async pull(controller) {
          controller.enqueue(bytes);
          await Bun.sleep(20);
          controller.error(new Error('connection dropped on purpose'));
        },
      }), { headers: { 'content-length': String(bytes.length * 2) } });
    },
  });
  const url = (pathname: string) => `http://127.0.0.1:${server.port}${pathname}`;
  return {
    url,
    put(pathname, body, options = {}) {
      const bytes = typeof body === 'string' ? new TextEncoder().encode(body) : body;
      entries.set(pathname, { body: options.gzip ? gzipSync(bytes) : bytes });
      return url(pathname);
    },
    fail(pathname, status) {
      entries.set(pathname, { status });
      return url(pathname);
    },
    cut(pathname, bytes) {
      entries.set(pathname, { cutAfter: bytes });
      return url(pathname);
    },
    get requests() { return state.requests; },
    stop() { server.stop(true); },
  };
}

export function ndjson(resources: unknown[]): string {
  return resources.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

/** Counts and a checksum of every row of the given types' tables and history tables. */
export async function snapshot(sql: Sql, types: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const type of types) {
    for (const table of [type.toLowerCase(), `${type.toLowerCase()}_history`]) {
      const [row] = await sql.unsafe(
        `select count(*) as n, md5(coalesce(string_agg(id || txid || status || resource::text, ',' order by id, txid), '')) as sum from "${table}"`,
      );
      out[table] = `${row!.n}:${row!.sum}`;
    }
  }
  return out;
}
