/**
 * A real local HTTP server for `$load`/`$import` sources (Bun.serve on a free port): tests put
 * bodies at paths, or make a path answer an error status or break off in the middle of the body.
 */
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import type { Sql } from '../../src/storage/db.ts';

type Entry = { body: Uint8Array<ArrayBuffer> } | { status: number };

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
      return new Response(entry.body);
    },
  });
  // Dropped connections come from a raw TCP server: a promised Content-Length, half the bytes, close.
  const cuts = new Map<string, Uint8Array>();
  const dropper = net.createServer((socket) => {
    socket.once('data', (request) => {
      const pathname = request.toString('latin1').split(' ')[1] ?? '';
      const bytes = cuts.get(pathname) ?? new Uint8Array(0);
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${bytes.length * 2}\r\n\r\n`);
      socket.write(bytes, () => setTimeout(() => socket.destroy(), 20));
    });
  }).listen(0, '127.0.0.1');
  const url = (pathname: string) => `http://127.0.0.1:${server.port}${pathname}`;
  return {
    url,
    put(pathname, body, options = {}) {
      const bytes = typeof body === 'string' ? new TextEncoder().encode(body) : body;
      entries.set(pathname, { body: new Uint8Array(options.gzip ? gzipSync(bytes) : bytes) });
      return url(pathname);
    },
    fail(pathname, status) {
      entries.set(pathname, { status });
      return url(pathname);
    },
    cut(pathname, bytes) {
      cuts.set(pathname, bytes);
      return `http://127.0.0.1:${(dropper.address() as net.AddressInfo).port}${pathname}`;
    },
    get requests() { return state.requests; },
    stop() { server.stop(true); dropper.close(); },
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
