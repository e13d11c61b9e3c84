/**
 * A fhirhose killed with SIGKILL together with its embedded PostgreSQL (the whole process group,
 * as a container runtime or `kill -9 -<pgid>` does) starts again at once: the start waits for the
 * killed postmaster to be gone, or clears its stale lock, instead of failing with "lock file
 * postmaster.pid already exists". Nothing written before the kill is lost.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../helpers/database.ts';
import { basic } from '../helpers/server.ts';
import { clearStaleLock } from '../../src/storage/postmaster.ts';

const ROOT = path.resolve(import.meta.dir, '../..');
const SECRET = 'kill-test-secret';
let dataDir: string;
let port: number;
let pgPort: number;
const started: ReturnType<typeof Bun.spawn>[] = [];

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-kill-'));
  fs.chmodSync(dataDir, 0o755); // the postgres user must reach it when tests run as root
  port = await freePort();
  pgPort = await freePort();
});
afterAll(async () => {
  for (const proc of started) if (proc.exitCode === null) { try { process.kill(-proc.pid, 'SIGKILL'); } catch { /* gone */ } }
  await Bun.sleep(0);
  fs.rmSync(dataDir, { recursive: true, force: true });
}, 30_000);

/** `npm start` in a process group of its own (setsid), so the group can be killed as a whole. */
function spawnGroup(): { proc: ReturnType<typeof Bun.spawn>; output: () => string } {
  const { DATABASE_URL: _d, TEST_DATABASE_URL: _t, ...inherited } = process.env;
  const proc = Bun.spawn(['setsid', process.execPath, 'src/main.ts'], {
    cwd: ROOT,
    env: { ...inherited, HOST: '127.0.0.1', PORT: String(port), FHIRHOSE_PG_PORT: String(pgPort), FHIRHOSE_DATA_DIR: dataDir, FHIRHOSE_ROOT_SECRET: SECRET, FHIRHOSE_LOG: 'info' },
    stdout: 'pipe',
    stderr: 'pipe',
  });
  started.push(proc);
  let out = '';
  for (const stream of [proc.stdout, proc.stderr] as ReadableStream<Uint8Array>[]) {
    void (async () => { for await (const c of stream) out += new TextDecoder().decode(c); })();
  }
  return { proc, output: () => out };
}

async function listening(child: ReturnType<typeof spawnGroup>): Promise<void> {
  const until = Date.now() + 90_000;
  while (!child.output().includes('listening on')) {
    if (child.proc.exitCode !== null) throw new Error(`fhirhose exited ${child.proc.exitCode}: ${child.output()}`);
    if (Date.now() > until) throw new Error(`fhirhose did not start: ${child.output()}`);
    await Bun.sleep(50);
  }
}

const request = (pathname: string, init: RequestInit = {}) =>
  fetch(`http://127.0.0.1:${port}${pathname}`, { ...init, headers: { authorization: basic('root', SECRET), 'content-type': 'application/json' } });

test('the whole process group SIGKILLed, restarted at once: it starts, and the data is there', async () => {
  const first = spawnGroup();
  await listening(first);
  expect((await request('/Patient/k1', { method: 'PUT', body: JSON.stringify({ resourceType: 'Patient', id: 'k1' }) })).status).toBe(201);
  process.kill(-first.proc.pid, 'SIGKILL');
  await first.proc.exited;

  const second = spawnGroup();
  await listening(second);
  const read = await request('/Patient/k1');
  expect(read.status).toBe(200);
  expect(((await read.json()) as { id: string }).id).toBe('k1');
  process.kill(second.proc.pid, 'SIGTERM');
  expect(await second.proc.exited).toBe(0);
}, 240_000);

test('a lock naming a pid that is another program now is stale and removed; a gone pid is left to PostgreSQL', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-lock-'));
  try {
    const sleeper = Bun.spawn(['sleep', '30']);
    fs.writeFileSync(path.join(dir, 'postmaster.pid'), `${sleeper.pid}\n${dir}\n`);
    expect(await clearStaleLock(dir)).toContain(`pid ${sleeper.pid} is another program now`);
    expect(fs.existsSync(path.join(dir, 'postmaster.pid'))).toBe(false);
    sleeper.kill();
    await sleeper.exited;
    fs.writeFileSync(path.join(dir, 'postmaster.pid'), `${sleeper.pid}\n${dir}\n`);
    expect(await clearStaleLock(dir)).toBeUndefined();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
