/**
 * relieveMemory (src/memory.ts) in a child process of its own, whose RSS the test controls: a
 * process that holds 280 MB of live objects, not garbage, must not spend its time in full
 * collections that free nothing (the test runner, holding every test's server, did: a collection
 * of 40–50 ms at every 20 ms check, and a 140 MB upload took 60 s instead of 2), while garbage
 * that piles up above the limit is still collected.
 */
import { expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const MEMORY = path.resolve(import.meta.dir, '../src/memory.ts');

const SCRIPT = `
import { relieveMemory } from ${JSON.stringify(MEMORY)};
const live = [];
for (let i = 0; i < 2_000_000; i++) live.push({ i, s: 'value ' + i });
const rss = process.memoryUsage.rss();
let timed = async (ms, work) => {
  let inCalls = 0, slow = 0;
  for (const start = performance.now(); performance.now() - start < ms; ) {
    work();
    const a = performance.now(); relieveMemory(); const d = performance.now() - a;
    inCalls += d; if (d > 2) slow++;
  }
  return { share: inCalls / ms, collections: slow };
};
let x = 0;
const held = await timed(2000, () => { for (let k = 0; k < 1000; k++) x += Math.sqrt(k); });
const garbage = await timed(1000, () => { x += Buffer.alloc(1 << 20, x & 255).toString('latin1').length; });
console.log(JSON.stringify({ rss, held, garbage, live: live.length, x: x > 0 }));
`;

test('a process holding 280 MB of live objects spends at most a fifth of its time collecting, and garbage above the limit is still collected', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-memory-'));
  try {
    const file = path.join(dir, 'probe.ts');
    fs.writeFileSync(file, SCRIPT);
    const proc = Bun.spawn([process.execPath, file], { stdout: 'pipe', stderr: 'pipe' });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect({ code, err }).toEqual({ code: 0, err: '' });
    const result = JSON.parse(out);
    expect(result.rss).toBeGreaterThan(230 * 1024 * 1024); // above URGENT_LIMIT, where every check could collect
    expect(result.held.share).toBeLessThan(0.25); // one collection at most per growth and per 5x its own time: was 1.0
    expect(result.garbage.collections).toBeGreaterThan(0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
