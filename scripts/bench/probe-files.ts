/**
 * In-process measurement of `$export`'s file side: ndjson chunks → fileSplitter (gzip, sha1, disk),
 * as export-job.ts writes them, against plain zlib on the same bytes. No database, no HTTP.
 *
 *   bun scripts/bench/probe-files.ts [rows=200000] [mix|small|patients] [rounds=3]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { dataSet } from './data.ts';
import { fileSplitter } from '../../src/storage/files.ts';

const rows = Number(process.argv[2] ?? 200000);
const name = (process.argv[3] ?? 'mix') as 'mix';
const data = await dataSet(name, rows, []);
const CHUNK = 64 * 1024;
const chunksOf = (b: Buffer) => { const out: Buffer[] = []; for (let i = 0; i < b.length; i += CHUNK) out.push(b.subarray(i, i + CHUNK)); return out; };
const types = data.types.map((t) => ({ type: t.type, chunks: chunksOf(t.ndjson) }));
const total = data.types.reduce((n, t) => n + t.ndjson.length, 0);
console.log(`${rows} rows, ${(total / 1e6).toFixed(0)} MB of ndjson in ${types.length} types`);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'probe-files-'));

async function timed(label: string, fn: () => Promise<void>) {
  const c0 = process.cpuUsage(); const t0 = performance.now();
  await fn();
  const wall = (performance.now() - t0) / 1000; const cpu = process.cpuUsage(c0);
  console.log(`${label.padEnd(36)} wall ${wall.toFixed(2)} s  cpu ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s  ${(total / 1e6 / wall).toFixed(0)} MB/s`);
}

for (let round = 0; round < Number(process.argv[4] ?? 3); round++) {
  await timed('gzipSync level 1 (one core)', async () => { for (const t of types) zlib.gzipSync(Buffer.concat(t.chunks), { level: 1 }); });
  await timed('fileSplitter, one type at a time', async () => {
    for (const t of types) { const s = await fileSplitter(root, `a${round}`, { maxLines: 50000, nameOf: (i) => `${t.type}.${i}.ndjson` }); for (const c of t.chunks) await s.write(c); await s.close(); }
  });
  await timed('fileSplitter, two types at once', async () => {
    const queue = [...types];
    await Promise.all([0, 1].map(async () => { for (let t = queue.shift(); t; t = queue.shift()) { const s = await fileSplitter(root, `b${round}`, { maxLines: 50000, nameOf: (i) => `${t!.type}.${i}.ndjson` }); for (const c of t.chunks) await s.write(c); await s.close(); } }));
  });
}
fs.rmSync(root, { recursive: true, force: true });
