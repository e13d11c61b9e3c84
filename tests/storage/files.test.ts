/** storage/files.ts: the file splitter's cuts, and the sweep of export folders whose job is gone. */
import { expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileSplitter, sweepJobFiles } from '../../src/storage/files.ts';

const lineOf = (i: number) => `{"resourceType":"Patient","id":"p${i}"}\n`;

/** Writes lines 0..n-1 in pieces of `sizes` lines (cycled), through write or writeLines. */
async function split(root: string, job: string, n: number, sizes: number[], how: 'write' | 'writeLines' | 'mixed') {
  const s = await fileSplitter(root, job, { maxLines: 7, nameOf: (i) => `Patient.${String(i).padStart(3, '0')}.ndjson` });
  let i = 0;
  for (let k = 0; i < n; k++) {
    const take = Math.min(sizes[k % sizes.length]!, n - i);
    const text = Array.from({ length: take }, (_, j) => lineOf(i + j)).join('');
    // two chunks per piece when it can be cut in two, as the line writer hands over a full buffer
    const cut = Math.floor(text.length / 2);
    const chunks = [Buffer.from(text.slice(0, cut)), Buffer.from(text.slice(cut))];
    if (how === 'write' || (how === 'mixed' && k % 2)) for (const c of chunks) await s.write(c);
    else await s.writeLines(chunks, take);
    i += take;
  }
  const files = await s.close();
  return files.map((f) => ({ name: f.name, count: f.count, text: zlib.gunzipSync(fs.readFileSync(path.join(root, job, `${f.name}.gz`))).toString() }));
}

test('writeLines with the lines known cuts files exactly where scanning for newlines does', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-split-'));
  try {
    const expected = await split(root, 'scan', 40, [1], 'write');
    expect(expected.map((f) => f.count)).toEqual([7, 7, 7, 7, 7, 5]);
    for (const sizes of [[1], [3], [7], [6, 1, 8], [15], [40]]) {
      for (const how of ['writeLines', 'mixed'] as const) {
        const job = `${how}-${sizes.join('-')}`;
        const got = await split(root, job, 40, sizes, how);
        expect({ job, got }).toEqual({ job, got: expected });
        for (const f of got) expect(f.text.split('\n').length - 1).toBe(f.count);
      }
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('the sweep removes folders of jobs that are gone, never the folder of an export started while it runs', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-sweep-'));
  try {
    for (const id of ['kept', 'gone']) fs.mkdirSync(path.join(root, id));
    fs.writeFileSync(path.join(root, 'gone', 'Patient.000.ndjson.gz'), 'x');
    await sweepJobFiles(root, async () => {
      // an export kicked off between the listing and this read: its row and its first folder
      fs.mkdirSync(path.join(root, 'started-meanwhile'));
      return new Set(['kept', 'started-meanwhile']);
    });
    expect(fs.readdirSync(root).sort()).toEqual(['kept', 'started-meanwhile']);
    // nothing listed: the jobs are not even read
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-sweep-'));
    let read = false;
    await sweepJobFiles(empty, async () => { read = true; return new Set(); });
    expect(read).toBe(false);
    fs.rmSync(empty, { recursive: true });
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
