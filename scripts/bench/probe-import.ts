/**
 * Where `$import`'s server CPU goes, next to `$load`'s on the same lines (issue 14): starts the
 * server like `npm run bench` (a child on its own embedded PostgreSQL), then alternates
 * `POST /$load` of one gzipped file, (ops `dump`, `export`, `raw2`: the data loaded untimed first, then
 * every type's `GET /<Type>/$dump`, a system `$export` with its files downloaded, two raw COPYs), `POST /$import` of the same lines as one gzipped input per
 * type (a type over a quarter of the bytes cut into several, as the bench does) and, as `import1`,
 * as one input (ops `reload`, `reimport`: the same `$load` and `$import` into tables that hold every
 * id already, filled untimed by raw COPY: the upsert path), round by round. Prints per run the server's CPU seconds (and per thread group,
 * /proc/<pid>/task/<tid>/stat, threads grouped by name), PostgreSQL's, and the wall time.
 *
 *   bun scripts/bench/probe-import.ts [rows=200000] [data=small] [rounds=3] [ops=load,import,import1]
 *
 * PROBE_BASE=/path/to/another/checkout: an A/B run; a second server from that checkout (its own
 * embedded PostgreSQL under <checkout>/.bench/data) does the same ops in the same rounds, the two
 * alternating op by op, so both see the same machine load. Prints medians per server and op, and
 * each server's peak RSS over the whole run (VmHWM).
 * PROBE_TOOL='perf record -o /tmp/perf-{op}-{round}.data' runs that command with `-p <server pid>`
 * around each timed op (stopped with SIGINT). Status is polled every PROBE_POLL_MS (250 ms).
 * PROBE_DATA_DIR=DIR: the mix from that folder (as `npm run bench -- --data-dir DIR`).
 * PROBE_DUMP_ENCODING=gzip: the `dump` op asks for gzip (`Accept-Encoding`), as most clients do.
 */
import { gzipSync } from 'node:zlib';
import { benchSql, ROOT_SECRET, startServer, truncate, fmt, median, type ServerProcess } from './common.ts';
import { allLines, dataSet, split, type DataSetName } from './data.ts';
import { backendsBetween, countLines, fillTables, rawDump, serverCpu, threadSeconds } from './raw.ts';
import type { Sql } from '../../src/storage/db.ts';

const rows = Number(process.argv[2] ?? 200_000);
const name = (process.argv[3] ?? 'small') as DataSetName;
const rounds = Number(process.argv[4] ?? 3);
const ops = (process.argv[5] ?? 'load,import,import1').split(',');
const POLL_MS = Number(process.env.PROBE_POLL_MS ?? 250);
/** `Accept-Encoding` of the `dump` op's requests: `gzip` as most HTTP clients send it (fetch gunzips the body). */
const DUMP_ENCODING = process.env.PROBE_DUMP_ENCODING ?? 'identity';

interface Side { label: string; server: ServerProcess; sql: Sql }

const env = process.env.PROBE_ENV ? Object.fromEntries(process.env.PROBE_ENV.split(' ').map((kv) => kv.split('=') as [string, string])) : {};
const sides: Side[] = [];
const auth = 'Basic ' + Buffer.from(`root:${ROOT_SECRET}`).toString('base64');
try {
  for (const [label, root] of [['new', undefined], ...(process.env.PROBE_BASE ? [['base', process.env.PROBE_BASE]] : [])] as [string, string | undefined][]) {
    const server = await startServer({ env, root });
    sides.push({ label, server, sql: benchSql(server.databaseUrl) });
  }
  const data = await dataSet(name, rows, process.env.PROBE_DATA_DIR ? [process.env.PROBE_DATA_DIR] : []);
  const types = data.types.map((t) => t.type);
  const gz = gzipSync(allLines(data), { level: 6 });
  const inputs: { type: string; gz: Buffer }[] = [];
  for (const t of data.types) {
    const parts = Math.max(1, Math.round((4 * t.ndjson.length) / data.bytes));
    for (const part of split(t.ndjson, parts)) if (part.length > 0) inputs.push({ type: t.type, gz: gzipSync(part, { level: 6 }) });
  }
  const source = Bun.serve({
    port: 0, hostname: '127.0.0.1',
    fetch: (req) => {
      const m = /(\d+)\.ndjson\.gz$/.exec(new URL(req.url).pathname);
      return new Response((m ? inputs[Number(m[1])]!.gz : gz) as unknown as BodyInit);
    },
  });
  const base = `http://127.0.0.1:${source.port}`;
  console.log(`${fmt(rows)} ${name} lines, ${fmt(data.bytes / 1e6, 1)} MB, ${inputs.length} inputs; servers ${sides.map((s) => `${s.label} pid ${s.server.pid}`).join(', ')}`);
  let session = 0;
  const headers = { authorization: auth, 'content-type': 'application/json' };
  async function load(url: string): Promise<number> {
    const res = await fetch(`${url}/$load`, { method: 'POST', headers, body: JSON.stringify({ source: `${base}/all.gz` }) });
    const body = await res.text();
    if (res.status !== 200) throw new Error(`$load ${res.status} ${body.slice(0, 300)}`);
    return 0;
  }
  async function importOf(url: string, urls: { type?: string; url: string }[]): Promise<number> {
    const id = `probe-${Date.now()}-${++session}`;
    const res = await fetch(`${url}/$import`, { method: 'POST', headers, body: JSON.stringify({ id, contentEncoding: 'gzip', inputs: urls }) });
    if (res.status !== 201) throw new Error(`$import ${res.status} ${await res.text()}`);
    let polls = 0;
    for (;;) {
      await Bun.sleep(POLL_MS);
      polls++;
      const status = (await (await fetch(`${url}/BulkImportStatus/${id}`, { headers })).json()) as { status: string; imported: number };
      if (status.status === 'done' && status.imported === rows) return polls;
      if (status.status !== 'active') throw new Error(`$import ended ${JSON.stringify(status).slice(0, 300)}`);
    }
  }
  async function dump(url: string): Promise<number> {
    let lines = 0;
    const only = process.env.PROBE_TYPES?.split(',');
    for (const type of only ?? types) {
      const res = await fetch(`${url}/${type}/$dump`, { headers: { authorization: auth, 'accept-encoding': DUMP_ENCODING } });
      for await (const chunk of res.body!) lines += countLines(chunk);
    }
    if (!only && lines !== rows) throw new Error(`$dump gave ${lines} lines`);
    return 0;
  }
  async function exportAll(url: string): Promise<number> {
    const k0 = performance.now();
    const kick = await fetch(`${url}/$export?_type=${types.join(',')}`, { headers: { authorization: auth, prefer: 'respond-async' } });
    const kicked = performance.now();
    if (kick.status !== 202) throw new Error(`$export ${kick.status} ${await kick.text()}`);
    const status = kick.headers.get('content-location')!;
    let polls = 0;
    for (;;) {
      polls++;
      const res = await fetch(status, { headers: { authorization: auth } });
      if (res.status === 202) { await res.arrayBuffer(); await Bun.sleep(50); continue; }
      const manifest = (await res.json()) as { output: { url: string; count: number }[] };
      const ready = performance.now();
      const perFile: string[] = [];
      for (const file of manifest.output) {
        const f0 = performance.now();
        const f = await fetch(file.url, { headers: { authorization: auth, 'accept-encoding': 'gzip' }, decompress: false } as RequestInit);
        const f1 = performance.now();
        let bytes = 0;
        for await (const chunk of f.body!) bytes += chunk.length;
        if (process.env.PROBE_STEPS) perFile.push(`${(f1 - f0).toFixed(1)}+${(performance.now() - f1).toFixed(1)}ms/${(bytes / 1e6).toFixed(1)}MB`);
      }
      if (perFile.length) console.log(`  files (headers+body): ${perFile.join(' ')}`);
      if (process.env.PROBE_STEPS) console.log(`  export: kick-off ${(kicked - k0).toFixed(0)} ms, manifest at ${(ready - k0).toFixed(0)} ms, ${manifest.output.length} files downloaded in ${(performance.now() - ready).toFixed(0)} ms`);
      await fetch(status, { method: 'DELETE', headers: { authorization: auth } }).then((r) => r.arrayBuffer());
      const n = manifest.output.reduce((a, f) => a + f.count, 0);
      if (n !== rows) throw new Error(`$export counted ${n}`);
      return polls;
    }
  }
  const readOps = new Set(['dump', 'export', 'raw2']);
  const run: Record<string, (url: string, side: Side) => Promise<number>> = {
    dump,
    export: exportAll,
    raw2: async (_url, side) => { const r = await rawDump(side.server.databaseUrl, types, 2); if (r.rows !== rows) throw new Error('raw2 rows'); return 0; },
    load,
    import: (url) => importOf(url, inputs.map((input, i) => ({ type: input.type, url: `${base}/${input.type}.${i}.ndjson.gz` }))),
    import1: (url) => importOf(url, [{ url: `${base}/all.gz` }]),
    // into tables that already hold every id (filled untimed by raw COPY): the upsert path
    reload: (url) => load(url),
    reimport: (url) => importOf(url, inputs.map((input, i) => ({ type: input.type, url: `${base}/${input.type}.${i}.ndjson.gz` }))),
  };
  const results = new Map<string, { server: number[]; pg: number[]; wall: number[] }>();
  for (let round = 0; round <= rounds; round++) {
    const order = ops.flatMap((op) => sides.map((side) => ({ op, side })));
    for (const { op, side } of round % 2 ? order.reverse() : order) {
      const { server, sql } = side;
      if (readOps.has(op) || op === 'reload' || op === 'reimport') await fillTables(sql, server.databaseUrl, data.types);
      else await truncate(sql, types);
      await Bun.sleep(300);
      const tool = process.env.PROBE_TOOL && round > 0
        ? Bun.spawn([...process.env.PROBE_TOOL.replaceAll('{op}', `${side.label}-${op}`).replaceAll('{round}', String(round)).split(' '), '-p', String(server.pid)], { stdout: 'inherit', stderr: 'inherit' })
        : undefined;
      if (tool) await Bun.sleep(500);
      const t0 = threadSeconds(server.pid);
      const before = await serverCpu(sql, server.pid);
      const w0 = performance.now();
      const polls = await run[op]!(server.url, side);
      const wall = (performance.now() - w0) / 1000;
      const after = await serverCpu(sql, server.pid);
      const t1 = threadSeconds(server.pid);
      if (tool) { tool.kill('SIGINT'); await tool.exited; }
      const pg = backendsBetween(before.backends, after.backends);
      const per = [...t1].map(([k, v]) => [k, v - (t0.get(k) ?? 0)] as const).filter(([, v]) => v >= 0.02).sort((a, b) => b[1] - a[1]);
      const total = after.server - before.server;
      console.log(`${round === 0 ? 'warm-up' : `round ${round}`} ${side.label.padEnd(4)} ${op.padEnd(7)} wall ${wall.toFixed(2)} s  server ${total.toFixed(2)} s  pg ${pg.toFixed(2)} s  polls ${polls}  threads: ${per.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`);
      if (round === 0) continue;
      const key = `${side.label} ${op}`;
      const r = results.get(key) ?? { server: [], pg: [], wall: [] };
      r.server.push(total);
      r.pg.push(pg);
      r.wall.push(wall);
      results.set(key, r);
    }
  }
  console.log(`medians of ${rounds} rounds (CPU seconds per ${fmt(rows)} lines):`);
  for (const [key, r] of results) console.log(`  ${key.padEnd(14)} server ${median(r.server).toFixed(2)} s (${r.server.map((x) => x.toFixed(2)).join(', ')})  pg ${median(r.pg).toFixed(2)} s  wall ${median(r.wall).toFixed(2)} s`);
  for (const side of sides) console.log(`  ${side.label} server peak RSS (VmHWM) ${side.server.peakMb().toFixed(0)} MB`);
  source.stop(true);
} finally {
  for (const side of sides) {
    await side.sql.end();
    await side.server.stop();
  }
}
