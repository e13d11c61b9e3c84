/**
 * Issue 14's lower bound for `$dump` on this machine: how close to the two-core limit can ANY
 * server get that passes the dump's bytes from PostgreSQL to an HTTP client? Alternates, round by
 * round, the bench's raw limit (two `COPY (select resource …) TO STDOUT` of each table's halves at
 * once, straight into this process), the same two COPYs through scripts/bench/proxy-server.ts (a
 * child process that only forwards the bytes, no JSON work), and fhirhose's `GET /<Type>/$dump`;
 * the client counts lines the same way for all three. Prints wall and CPU per round.
 *
 *   bun scripts/bench/probe-proxy.ts [rows=200000] [data=mix] [rounds=4]
 */
import fs from 'node:fs';
import { benchSql, freePort, ROOT_SECRET, startServer, fmt, median } from './common.ts';
import { dataSet, type DataSetName } from './data.ts';
import { backendsBetween, countLines, processSeconds, rawDump, serverCpu, fillTables } from './raw.ts';
import { tableOf } from '../../src/fhir/types.ts';

/** Kernel CPU seconds of a process (stime). */
function kernelSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) / 100;
}

const rows = Number(process.argv[2] ?? 200_000);
const name = (process.argv[3] ?? 'mix') as DataSetName;
const rounds = Number(process.argv[4] ?? 4);
const server = await startServer({});
const sql = benchSql(server.databaseUrl);
const port = await freePort();
const proxy = Bun.spawn([process.execPath, `${import.meta.dir}/proxy-server.ts`, server.databaseUrl, String(port)], { stdout: 'pipe', stderr: 'inherit' });
try {
  const data = await dataSet(name, rows, []);
  const types = data.types.map((t) => t.type);
  await fillTables(sql, server.databaseUrl, data.types);
  for await (const chunk of proxy.stdout) if (new TextDecoder().decode(chunk).includes('ready')) break;
  const auth = 'Basic ' + Buffer.from(`root:${ROOT_SECRET}`).toString('base64');
  const fetchLines = async (url: string, headers: Record<string, string> = {}) => {
    const res = await fetch(url, { headers: { 'accept-encoding': 'identity', ...headers } });
    if (res.status !== 200) throw new Error(`${url}: ${res.status}`);
    let n = 0;
    for await (const chunk of res.body!) n += countLines(chunk);
    return n;
  };
  const ways: Record<string, () => Promise<number>> = {
    raw2: async () => (await rawDump(server.databaseUrl, types, 2)).rows,
    proxy: async () => { let n = 0; for (const t of types) n += await fetchLines(`http://127.0.0.1:${port}/${tableOf(t)}`); return n; },
    dump: async () => { let n = 0; for (const t of types) n += await fetchLines(`${server.url}/${t}/$dump`, { authorization: auth }); return n; },
  };
  const results = new Map<string, { wall: number[]; pg: number[]; server: number[]; client: number[]; kernel: number[] }>();
  console.log(`${fmt(rows)} ${name} rows, ${fmt(data.bytes / 1e6, 1)} MB; proxy pid ${proxy.pid}, server pid ${server.pid}`);
  for (let round = 0; round <= rounds; round++) {
    const order = Object.keys(ways);
    for (const way of round % 2 ? order.reverse() : order) {
      const before = await serverCpu(sql, server.pid);
      const proxyBefore = await sql`select pid from pg_stat_activity where application_name in ('fhirhose-proxy', 'fhirhose-bench-raw')`;
      const pb = new Map(proxyBefore.map((r) => [Number(r.pid), processSeconds(Number(r.pid))]));
      const pidOf = way === 'proxy' ? proxy.pid : way === 'dump' ? server.pid : undefined;
      const s0 = pidOf ? processSeconds(pidOf) : 0;
      const k0 = pidOf ? kernelSeconds(pidOf) : 0;
      const c0 = processSeconds(process.pid);
      const t0 = performance.now();
      const n = await ways[way]!();
      const wall = (performance.now() - t0) / 1000;
      const client = processSeconds(process.pid) - c0;
      const s1 = pidOf ? processSeconds(pidOf) : 0;
      const kernel = pidOf ? kernelSeconds(pidOf) - k0 : 0;
      const after = await serverCpu(sql, server.pid);
      const proxyAfter = await sql`select pid from pg_stat_activity where application_name in ('fhirhose-proxy')`;
      const pa = new Map(proxyAfter.map((r) => [Number(r.pid), processSeconds(Number(r.pid))]));
      // raw's backends end with their connections: their CPU is in raw's own result
      const pg = way === 'raw2' ? Number.NaN : way === 'proxy' ? backendsBetween(pb, pa) : backendsBetween(before.backends, after.backends);
      if (n !== rows) throw new Error(`${way}: ${n} lines, expected ${rows}`);
      console.log(`${round === 0 ? 'warm-up' : `round ${round}`} ${way.padEnd(6)} wall ${wall.toFixed(2)} s  server ${(s1 - s0).toFixed(2)} s (kernel ${kernel.toFixed(2)})  pg ${pg.toFixed(2)} s  client ${client.toFixed(2)} s`);
      if (round === 0) continue;
      const r = results.get(way) ?? { wall: [], pg: [], server: [], client: [], kernel: [] };
      r.kernel.push(kernel);
      r.wall.push(wall); r.pg.push(pg); r.server.push(s1 - s0); r.client.push(client);
      results.set(way, r);
    }
  }
  console.log(`medians of ${rounds} rounds:`);
  const limit = median(results.get('raw2')!.wall);
  for (const [way, r] of results) {
    console.log(`  ${way.padEnd(6)} wall ${median(r.wall).toFixed(2)} s (${(limit / median(r.wall)).toFixed(2)}× of the limit)  server ${median(r.server).toFixed(2)} s (kernel ${median(r.kernel).toFixed(2)})  pg ${median(r.pg).toFixed(2)} s  client ${median(r.client).toFixed(2)} s`);
  }
} finally {
  proxy.kill();
  await sql.end();
  await server.stop();
}
