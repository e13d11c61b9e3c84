/**
 * The ordinary client of the limit tests (SPEC §10): while an abusive request or import runs, it
 * reads `GET /Patient/<id>` again and again; each read must answer 200 within a bound.
 */
import { expect } from 'bun:test';
import { readFileSync } from 'node:fs';
import type { TestServer } from './server.ts';

/** Generous for a loaded 2-core machine; a starved pool answered after tens of seconds. */
export const NEIGHBOUR_BOUND_MS = 3000;

/** Awaits `work` while reading `/Patient/<id>`; asserts every read answered 200 within the bound. */
export async function whileReading<T>(server: TestServer, id: string, work: Promise<T>): Promise<T> {
  let stop = false;
  const latencies: number[] = [];
  const reader = (async () => {
    do {
      const started = performance.now();
      const res = await server.request(`/Patient/${id}`);
      await res.arrayBuffer();
      latencies.push(performance.now() - started);
      expect(res.status).toBe(200);
      await Bun.sleep(20);
    } while (!stop);
  })();
  try {
    return await work;
  } finally {
    stop = true;
    await reader;
    expect(latencies.length).toBeGreaterThan(0);
    expect(Math.max(...latencies)).toBeLessThan(NEIGHBOUR_BOUND_MS);
  }
}

/** The server process's resident memory in bytes, from /proc (the test server runs in this process). */
export function rssBytes(pid: number | 'self' = 'self'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8') as string;
  const kb = /VmRSS:\s+(\d+) kB/.exec(status);
  return kb ? Number(kb[1]) * 1024 : 0;
}
