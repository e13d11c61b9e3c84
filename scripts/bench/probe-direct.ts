/** Probe (issue 14): the PostgreSQL side of `$load` alone, on prepared bytes: staging COPY (CSV or binary) + plain INSERT merge against COPY straight into the empty resource tables (CSV with defaults, CSV explicit, binary). OPS=staging,bstage,direct,full,bfull,bdef */
import { benchSql, startServer, truncate } from './common.ts';
import { dataSet, type DataSetName } from './data.ts';
import { serverCpu, backendsBetween } from './raw.ts';
import { ident } from '../../src/storage/db.ts';
import { tableOf } from '../../src/fhir/types.ts';

const SIG = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
function binRows(list: { id: string; json: string }[], txid: bigint, micros: bigint, type: string | null, line0: number, staging: boolean): Buffer {
  const out = Buffer.allocUnsafe(list.reduce((a, r) => a + r.json.length * 3 + 200, 0) + 32);
  let p = 0;
  SIG.copy(out, 0); p = 11; out.writeInt32BE(0, p); p += 4; out.writeInt32BE(0, p); p += 4;
  let line = line0;
  for (const r of list) {
    if (staging) {
      out.writeInt16BE(4, p); p += 2;
      out.writeInt32BE(4, p); p += 4; out.writeInt32BE(++line, p); p += 4;
      const tl = out.write(type!, p + 4, 'latin1'); out.writeInt32BE(tl, p); p += 4 + tl;
    } else {
      out.writeInt16BE(type ? 6 : 4, p); p += 2;
    }
    const il = out.write(r.id, p + 4, 'latin1'); out.writeInt32BE(il, p); p += 4 + il;
    if (!staging) {
      out.writeInt32BE(8, p); p += 4; out.writeBigInt64BE(txid, p); p += 8;
      if (type) { out.writeInt32BE(8, p); p += 4; out.writeBigInt64BE(micros, p); p += 8; out.writeInt32BE(8, p); p += 4; out.writeBigInt64BE(micros, p); p += 8; }
      out.writeInt32BE(7, p); p += 4; p += out.write('created', p, 'latin1');
    }
    out[p + 4] = 1;
    const jl = out.write(r.json, p + 5, 'utf8'); out.writeInt32BE(jl + 1, p); p += 5 + jl;
  }
  out.writeInt16BE(-1, p); p += 2;
  return out.subarray(0, p);
}
const rows = Number(process.argv[2] ?? 200_000);
const name = (process.argv[3] ?? 'small') as DataSetName;
const rounds = Number(process.argv[4] ?? 3);
const server = await startServer({});
const sql = benchSql(server.databaseUrl);
try {
  const data = await dataSet(name, rows, []);
  const types = data.types.map((t) => t.type);
  // per type: staging-format and direct-format buffers
  const staging: Buffer[] = [];
  const direct = new Map<string, Buffer>();
  const full = new Map<string, Buffer>();
  const bin = new Map<string, { id: string; json: string }[]>();
  let line = 0;
  for (const t of data.types) {
    const st: string[] = []; const di: string[] = []; const fu: string[] = []; const parsed: { id: string; json: string }[] = [];
    for (const text of t.ndjson.toString('utf8').split('\n')) {
      if (!text) continue;
      const r = JSON.parse(text); const id = r.id; delete r.id; delete r.resourceType;
      const json = JSON.stringify(r);
      parsed.push({ id, json });
      st.push(`${++line}\x02${t.type}\x02${id}\x02${json}\x02\n`);
      di.push(`${id}\x02TXID\x02created\x02${json}\n`);
      fu.push(`${id}\x02TXID\x02TS\x02TS\x02${t.type}\x02created\x02${json}\n`);
    }
    staging.push(Buffer.from(st.join('')));
    direct.set(t.type, Buffer.from(di.join('')));
    full.set(t.type, Buffer.from(fu.join('')));
    bin.set(t.type, parsed);
  }
  const opts = `with (format csv, delimiter e'\\x02', quote e'\\x01')`;
  async function copy(tx: any, stmt: string, buf: Buffer) {
    const w = await tx.unsafe(stmt).writable();
    for (let i = 0; i < buf.length; i += 1 << 20) if (!w.write(buf.subarray(i, i + (1 << 20)))) await new Promise((r) => w.once('drain', r));
    await new Promise<void>((res, rej) => { w.on('error', rej); w.end(res); });
  }
  /** The staging ways' merge: an index on type, a plain INSERT … SELECT per type, as staging-merge.ts does into empty tables. */
  const mergeStage = async (tx: any) => {
    await tx.unsafe(`create index on stage (type)`);
    const [v] = await tx`select nextval('transaction_id_seq')::text as txid, now()::text as ts`;
    for (const type of types) {
      await tx.unsafe(`insert into ${ident(tableOf(type))} as t (id, txid, cts, ts, resource_type, status, resource) select id, $2::bigint, $3::timestamptz, $3::timestamptz, $1, 'created'::resource_status, resource from stage where type = $1 and error is null`, [type, v!.txid, v!.ts]);
    }
    await tx.unsafe('drop table stage');
  };
  const runs: Record<string, () => Promise<void>> = {
    staging: () => sql.begin(async (tx) => {
      await tx.unsafe(`create unlogged table stage (line int not null, type text not null, id text not null, resource jsonb not null, refs text[], error text)`);
      const w = Buffer.concat(staging);
      await copy(tx, `copy stage (line, type, id, resource, refs) from stdin ${opts}`, w);
      await mergeStage(tx);
    }) as Promise<any>,
    direct: () => sql.begin(async (tx) => {
      const [v] = await tx`select nextval('transaction_id_seq')::text as txid`;
      for (const type of types) {
        const buf = Buffer.from(direct.get(type)!.toString().replaceAll('TXID', v!.txid));
        await copy(tx, `copy ${ident(tableOf(type))} (id, txid, status, resource) from stdin ${opts}`, buf);
      }
    }) as Promise<any>,
    bstage: () => sql.begin(async (tx) => {
      await tx.unsafe(`create unlogged table stage (line int not null, type text not null, id text not null, resource jsonb not null, refs text[], error text)`);
      let line = 0;
      for (const type of types) { const l = bin.get(type)!; await copy(tx, `copy stage (line, type, id, resource) from stdin (format binary)`, binRows(l, 0n, 0n, type, line, true)); line += l.length; }
      await mergeStage(tx);
    }) as Promise<any>,
    bfull: () => sql.begin(async (tx) => {
      const [v] = await tx`select nextval('transaction_id_seq')::text as txid, ((extract(epoch from now()) - 946684800) * 1000000)::bigint::text as us`;
      for (const type of types) await copy(tx, `copy ${ident(tableOf(type))} (id, txid, cts, ts, status, resource) from stdin (format binary)`, binRows(bin.get(type)!, BigInt(v!.txid), BigInt(v!.us), type, 0, false));
    }) as Promise<any>,
    bdef: () => sql.begin(async (tx) => {
      const [v] = await tx`select nextval('transaction_id_seq')::text as txid`;
      for (const type of types) await copy(tx, `copy ${ident(tableOf(type))} (id, txid, status, resource) from stdin (format binary)`, binRows(bin.get(type)!, BigInt(v!.txid), 0n, null, 0, false));
    }) as Promise<any>,
    full: () => sql.begin(async (tx) => {
      const [v] = await tx`select nextval('transaction_id_seq')::text as txid, now()::text as ts`;
      for (const type of types) {
        const buf = Buffer.from(full.get(type)!.toString().replaceAll('TXID', v!.txid).replaceAll('TS', v!.ts));
        await copy(tx, `copy ${ident(tableOf(type))} (id, txid, cts, ts, resource_type, status, resource) from stdin ${opts}`, buf);
      }
    }) as Promise<any>,
  };
  for (let r = 0; r < rounds; r++) {
    for (const op of (process.env.OPS ?? 'staging,bstage,direct,full,bfull,bdef').split(',')) {
      await truncate(sql, types);
      await sql`checkpoint`;
      const before = await serverCpu(sql, server.pid);
      const t0 = performance.now();
      await runs[op]!();
      const wall = (performance.now() - t0) / 1000;
      const after = await serverCpu(sql, server.pid);
      const n = (await sql.unsafe<{ n: number }[]>(`select (${types.map((t) => `(select count(*) from ${ident(tableOf(t))})`).join('+')})::int as n`))[0]?.n;
      console.log(`${op.padEnd(8)} wall ${wall.toFixed(2)} s  PG ${backendsBetween(before.backends, after.backends).toFixed(2)} s  rows ${n}`);
    }
  }
} finally {
  await sql.end();
  await server.stop();
}
