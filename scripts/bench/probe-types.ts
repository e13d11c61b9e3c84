/** Per-type wall time of `GET /<Type>/$dump` against raw COPY of the same table on 1 and 2 connections (issue 14). */
import { benchSql, ROOT_SECRET, startServer, fmt } from './common.ts';
import { dataSet, type DataSetName } from './data.ts';
import { countLines, rawDump, fillTables } from './raw.ts';
import { ident } from '../../src/storage/db.ts';
import { tableOf } from '../../src/fhir/types.ts';

const rows = Number(process.argv[2] ?? 200_000);
const name = (process.argv[3] ?? 'mix') as DataSetName;
const rounds = Number(process.argv[4] ?? 3);
const auth = 'Basic ' + Buffer.from(`root:${ROOT_SECRET}`).toString('base64');
const server = await startServer({ env: {} });
const sql = benchSql(server.databaseUrl);
try {
  const data = await dataSet(name, rows, []);
  const types = data.types.map((t) => t.type);
  await fillTables(sql, server.databaseUrl, data.types);
  const t = { dump: new Map<string, number>(), raw1: new Map<string, number>(), raw2: new Map<string, number>() };
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (let round = 0; round < rounds; round++) {
    for (const type of types) {
      let w = performance.now();
      const res = await fetch(`${server.url}/${type}/$dump`, { headers: { authorization: auth, 'accept-encoding': 'identity' } });
      let lines = 0;
      for await (const chunk of res.body!) lines += countLines(chunk);
      add(t.dump, type, performance.now() - w);
      w = performance.now(); await rawDump(server.databaseUrl, [type], 1); add(t.raw1, type, performance.now() - w);
      w = performance.now(); await rawDump(server.databaseUrl, [type], 2); add(t.raw2, type, performance.now() - w);
    }
  }
  let sums = [0, 0, 0];
  for (const type of types) {
    const [s] = await sql.unsafe(`select pg_relation_size('${ident(tableOf(type))}') as b`);
    const v = [t.dump.get(type)!, t.raw1.get(type)!, t.raw2.get(type)!].map((x) => x / rounds);
    sums = sums.map((x, i) => x + v[i]!);
    console.log(`${type.padEnd(22)} ${fmt(Number(s!.b) / 1e6, 1).padStart(6)} MB  dump ${v[0]!.toFixed(1).padStart(7)} ms  raw1 ${v[1]!.toFixed(1).padStart(7)}  raw2 ${v[2]!.toFixed(1).padStart(7)}`);
  }
  console.log(`sum dump ${sums[0]!.toFixed(0)} raw1 ${sums[1]!.toFixed(0)} raw2 ${sums[2]!.toFixed(0)} ms (raw includes connect per call)`);
} finally {
  await sql.end();
  await server.stop();
}
