/** storage/files.ts: the sweep of export folders whose job is gone. */
import { expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sweepJobFiles } from '../../src/storage/files.ts';

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
