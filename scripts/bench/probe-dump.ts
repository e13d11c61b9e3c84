/**
 * In-process measurement of `$dump`'s per-row work in Bun: the binary COPY decoder and the line
 * splicer (src/operations/dump-lines.ts), on a data set of scripts/bench/data.ts turned into the
 * tuples PostgreSQL sends (jsonb's text output: keys sorted by length, `": `, `, `), in chunks of
 * whole tuples as copy-out.ts hands them over. No database, no HTTP: much less noisy than
 * `npm run bench` on a shared machine, for comparing two versions of the splicer.
 *
 *   bun scripts/bench/probe-dump.ts [rows=100000] [mix|small|patients] [rounds=5]
 *
 * A/B in one process: put the old splicer next to the new one and set AB=1 (even rounds old, odd new):
 *   git show <commit>:src/operations/dump-lines.ts > src/operations/dump-lines-old.ts
 *   AB=1 bun scripts/bench/probe-dump.ts 100000 mix 8; rm src/operations/dump-lines-old.ts
 */
import { dataSet } from './data.ts';
import { copyBinaryDecoder } from '../../src/storage/copy-binary.ts';
import { lineWriter as newWriter } from '../../src/operations/dump-lines.ts';
const { lineWriter: oldWriter } = process.env.AB ? await import(`../../src/operations/${'dump-lines-old.ts'}`) : { lineWriter: newWriter };

const rows = Number(process.argv[2] ?? 100000);
const name = (process.argv[3] ?? 'mix') as 'mix';
const data = await dataSet(name, rows, []);
function jsonb(v: unknown): string {
  if (Array.isArray(v)) return '[' + v.map(jsonb).join(', ') + ']';
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v).sort((a, b) => Buffer.byteLength(a) - Buffer.byteLength(b) || (a < b ? -1 : a > b ? 1 : 0));
    return '{' + keys.map((k) => JSON.stringify(k) + ': ' + jsonb((v as any)[k])).join(', ') + '}';
  }
  return JSON.stringify(v);
}
const perType: { type: string; copy: Buffer }[] = [];
for (const t of data.types.filter((t) => !process.env.ONLY || t.type === process.env.ONLY)) {
  const parts: Buffer[] = [Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)];
  for (const line of t.ndjson.toString().split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line); const id = r.id; delete r.id; delete r.resourceType;
    const text = Buffer.from(jsonb(r));
    const idb = Buffer.from(id);
    const h = Buffer.alloc(2 + 4 + idb.length + 4 + 8 + 4 + 8 + 4 + 1);
    let p = h.writeInt16BE(4, 0); p = h.writeInt32BE(idb.length, p); p += idb.copy(h, p);
    p = h.writeInt32BE(8, p); p = h.writeBigInt64BE(12345n, p); p = h.writeInt32BE(8, p); p = h.writeBigInt64BE(851234567000000n, p);
    p = h.writeInt32BE(text.length + 1, p); h[p] = 1;
    parts.push(h, text);
  }
  const trailer = Buffer.alloc(2); trailer.writeInt16BE(-1); parts.push(trailer);
  // chunks of whole tuples (as copy-out's gather hands them over), about 1 MiB each
  const chunks: Buffer[] = []; let run: Buffer[] = []; let size = 0;
  for (let i = 0; i < parts.length; i++) { run.push(parts[i]!); size += parts[i]!.length; if (size > (1 << 20) - 8192 && i % 2 === 1) { chunks.push(Buffer.concat(run)); run = []; size = 0; } }
  chunks.push(Buffer.concat(run));
  perType.push({ type: t.type, copy: Buffer.concat(parts), chunks } as any);
}
const total = perType.reduce((n, t) => n + t.copy.length, 0);
console.log(`${rows} rows, ${(total / 1e6).toFixed(0)} MB of COPY`);
for (let round = 0; round < Number(process.argv[4] ?? 5); round++) {
  const c0 = process.cpuUsage();
  let out = 0; let slow = 0;
  for (const t of perType) {
    const w = (round % 2 === 0 ? oldWriter : newWriter)(t.type);
    const d = copyBinaryDecoder(4, (b, f) => w.tuple(b, f));
    for (const chunk of (t as any).chunks) { d.push(chunk); for (const c of w.take()) out += c.length; }
    d.end();
  }
  const cpu = process.cpuUsage(c0);
  if (process.env.PER_TYPE) {
    const line: string[] = [];
    for (const t of perType) {
      const w = newWriter(t.type);
      const d = copyBinaryDecoder(4, process.env.DECODE_ONLY ? () => {} : (b, f) => w.tuple(b, f));
      const t0 = performance.now();
      for (const chunk of (t as any).chunks) { d.push(chunk); w.take(); }
      d.end();
      line.push(`${t.type} ${(performance.now() - t0).toFixed(1)}`);
    }
    console.log(`  ms per type: ${line.join(', ')}`);
  }
  console.log(`${process.env.AB ? (round % 2 === 0 ? 'before' : 'after ') : ''} round ${round}: ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms cpu, ${((cpu.user + cpu.system) / rows).toFixed(2)} µs/row, out ${(out / 1e6).toFixed(0)} MB`);
}
