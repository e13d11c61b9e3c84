/**
 * What gzipping `$export`'s files costs, per compressor, on the bench's data (issue 14): node:zlib
 * level 1 (what gzip.ts uses), and Bun.gzipSync with zlib and with libdeflate, on 1 MiB blocks
 * (libdeflate compresses whole buffers: one gzip member per block). CPU seconds of this process,
 * output size, best of `rounds`.
 *
 *   bun scripts/bench/probe-gzip.ts [rows=200000] [data=small] [rounds=3]
 */
import zlib from 'node:zlib';
import { dataSet, type DataSetName } from './data.ts';
import { processSeconds } from './raw.ts';

const rows = Number(process.argv[2] ?? 200_000);
const name = (process.argv[3] ?? 'small') as DataSetName;
const rounds = Number(process.argv[4] ?? 3);
const data = await dataSet(name, rows, []);
const all = Buffer.concat(data.types.map((t) => Buffer.from(t.ndjson)));
const BLOCK = 1 << 20;
const blocks: Uint8Array<ArrayBuffer>[] = [];
for (let i = 0; i < all.length; i += BLOCK) blocks.push(new Uint8Array(all.subarray(i, i + BLOCK)));
console.log(`${name}: ${(all.length / 1e6).toFixed(1)} MB in ${blocks.length} blocks of 1 MiB`);

const ways: Record<string, () => number> = {
  // the same deflate as gzip.ts's writer (node:zlib, level 1, one member), on the whole buffer
  'node:zlib gzipSync level 1, one member': () => zlib.gzipSync(all, { level: 1 }).length,
  'Bun.gzipSync zlib level 1, per block': () => blocks.reduce((n, b) => n + Bun.gzipSync(b, { level: 1 }).length, 0),
  'Bun.gzipSync libdeflate level 1, per block': () => blocks.reduce((n, b) => n + Bun.gzipSync(b, { level: 1, library: 'libdeflate' }).length, 0),
  'Bun.gzipSync libdeflate level 2, per block': () => blocks.reduce((n, b) => n + Bun.gzipSync(b, { level: 2, library: 'libdeflate' }).length, 0),
};
for (const [way, run] of Object.entries(ways)) {
  const cpu: number[] = [];
  let size = 0;
  for (let r = 0; r < rounds; r++) {
    const c0 = processSeconds(process.pid);
    size = run();
    cpu.push(processSeconds(process.pid) - c0);
  }
  console.log(`${way.padEnd(44)} CPU best ${Math.min(...cpu).toFixed(2)} s (${cpu.map((c) => c.toFixed(2)).join(', ')})  out ${(size / 1e6).toFixed(1)} MB (${(all.length / size).toFixed(1)}×)`);
}
