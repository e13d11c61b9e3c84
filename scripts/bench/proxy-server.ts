/**
 * The least a server between PostgreSQL and an HTTP client can do for a dump (issue 14's lower
 * bound, scripts/bench/probe-proxy.ts): `GET /<table>` runs the two raw `COPY (select resource …)
 * TO STDOUT` of the table's halves at once, as the bench's two-core limit does, and streams their
 * bytes to the response as they come (framed runs from postgres.js, unframed into 1 MiB buffers:
 * one copy), with no JSON work at all. Text COPY, so the lines are what the raw client counts.
 *
 *   bun scripts/bench/proxy-server.ts <databaseUrl> <port>
 */
import { connect } from '../../src/storage/db.ts';
import { copyOut } from '../../src/storage/copy-out.ts';

const [databaseUrl, port] = [process.argv[2]!, Number(process.argv[3])];
const sql = connect(databaseUrl, { max: 4, applicationName: 'fhirhose-proxy' });

Bun.serve({
  port,
  hostname: '127.0.0.1',
  idleTimeout: 0,
  async fetch(req) {
    const table = new URL(req.url).pathname.slice(1);
    const [size] = await sql.unsafe(`select pg_relation_size('"${table}"') / current_setting('block_size')::int as pages`);
    const middle = Math.floor(Number(size!.pages) / 2);
    const halves = await Promise.all([`ctid < '(${middle},0)'`, `ctid >= '(${middle},0)'`].map((where) =>
      copyOut(sql, `copy (select resource from "${table}" where ${where}) to stdout`, { reuseBuffer: true })));
    // both COPYs read at once; their chunks (whole rows: a framed run ends at a message's end) in turn
    const queue: Uint8Array[] = [];
    const waiters: (() => void)[] = [];
    const wake = () => { for (const w of waiters.splice(0)) w(); };
    const changed = () => new Promise<void>((r) => { waiters.push(r); });
    let open = halves.length;
    for (const half of halves) {
      void (async () => {
        const reader = half.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          queue.push(Buffer.from(value)); // the buffer is reused by the next read
          wake();
          while (queue.length > 8) await changed();
        }
        open--;
        wake();
      })();
    }
    return new Response(new ReadableStream<Uint8Array>({
      async pull(controller) {
        for (;;) {
          const chunk = queue.shift();
          if (chunk) { wake(); return controller.enqueue(chunk); }
          if (open === 0) return controller.close();
          await changed();
        }
      },
    }, { highWaterMark: 0 }), { headers: { 'content-type': 'application/fhir+ndjson' } });
  },
});
console.log('ready');
