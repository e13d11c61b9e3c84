/**
 * `npm start` as a user runs it (SPEC §1): `bun src/main.ts` as a child process with an embedded
 * PostgreSQL in a temporary FHIRHOSE_DATA_DIR, no DATABASE_URL and no FHIRHOSE_ROOT_SECRET.
 * One start costs a PostgreSQL start, so the tests share one data dir and run in order.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { basic } from './helpers/server.ts';
import { freePort } from './helpers/database.ts';
import { connect } from '../src/storage/db.ts';

const ROOT = path.resolve(import.meta.dir, '..');
/** The first start runs initdb; on a slow machine it takes well over bun's default 5 s. */
const START_TIMEOUT_MS = 60_000;
let dataDir: string;
let port: number;
let pgPort: number;
let secret: string;

interface Child { proc: ReturnType<typeof Bun.spawn>; output: () => string; errors: () => string }
const children: Child[] = [];

function spawnMain(env: Record<string, string> = {}): Child {
  const { DATABASE_URL: _d, FHIRHOSE_ROOT_SECRET: _r, TEST_DATABASE_URL: _t, ...inherited } = process.env;
  const proc = Bun.spawn([process.execPath, 'src/main.ts'], {
    cwd: ROOT,
    env: { ...inherited, HOST: '127.0.0.1', PORT: String(port), FHIRHOSE_PG_PORT: String(pgPort), FHIRHOSE_DATA_DIR: dataDir, FHIRHOSE_LOG: 'info', ...env },
    stdout: 'pipe',
    stderr: 'pipe',
  });
  let out = '';
  let err = '';
  void (async () => { for await (const c of proc.stdout as ReadableStream<Uint8Array>) out += new TextDecoder().decode(c); })();
  void (async () => { for await (const c of proc.stderr as ReadableStream<Uint8Array>) err += new TextDecoder().decode(c); })();
  const child = { proc, output: () => out, errors: () => err };
  children.push(child);
  return child;
}

/** Resolves once the server logs that it listens; fails if it exits first. */
async function started(child: Child): Promise<Child> {
  for (let i = 0; i < 600; i++) {
    if (child.output().includes('listening on')) return child;
    if (child.proc.exitCode !== null) throw new Error(`fhirhose exited ${child.proc.exitCode}: ${child.errors()}${child.output()}`);
    await Bun.sleep(50);
  }
  throw new Error(`fhirhose did not start: ${child.output()}`);
}

const get = (pathname: string, auth: string) => fetch(`http://127.0.0.1:${port}${pathname}`, { headers: { authorization: auth } });

function postmasterPid(): number {
  return Number(fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
}

/** A live (not zombie) process: /proc state other than Z. */
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function accepts(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port: p });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-main-'));
  fs.chmodSync(dataDir, 0o755); // the postgres user must reach it when tests run as root
  port = await freePort();
  pgPort = await freePort();
});
afterAll(async () => {
  // a failed test must not leave a server or its PostgreSQL behind
  for (const child of children) if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
  const pidFile = path.join(dataDir, 'pg', 'postmaster.pid');
  if (fs.existsSync(pidFile) && running(postmasterPid())) process.kill(postmasterPid(), 'SIGINT');
  for (let i = 0; i < 100 && fs.existsSync(pidFile); i++) await Bun.sleep(50);
  fs.rmSync(dataDir, { recursive: true, force: true });
});

describe('npm start', () => {
  test('the first start prints the psql URL and a generated root secret that works', async () => {
    const child = await started(spawnMain());
    const log = child.output();
    const psql = /embedded PostgreSQL ready: psql (postgres:\/\/\S+)/.exec(log)?.[1];
    expect(psql).toStartWith(`postgres://postgres:`);
    expect(psql).toContain(`@127.0.0.1:${pgPort}/fhirhose`);
    const generated = [...log.matchAll(/root:(\S+)/g)];
    expect(generated).toHaveLength(1);
    secret = generated[0]![1]!;
    expect(secret.length).toBeGreaterThanOrEqual(24);
    expect((await get('/Patient', basic('root', secret))).status).toBe(200);
    expect((await get('/Patient', basic('root', 'guess'))).status).toBe(401);

    // the printed URL is how a user runs the demo SQL
    const sql = connect(psql!, { max: 1 });
    await sql.unsafe(`INSERT INTO patient (id, txid, status, resource) SELECT g.id, g.id, 'created', '{"name": [{"family": "John"}]}' FROM generate_series(1, 100) AS g (id)`);
    await sql.end();
    expect((await (await get('/Patient/5', basic('root', secret))).json()).name).toEqual([{ family: 'John' }]);

    // SIGTERM: stops in order, exit code 0, PostgreSQL gone
    const pg = postmasterPid();
    expect(running(pg)).toBe(true);
    child.proc.kill('SIGTERM');
    expect(await child.proc.exited).toBe(0);
    expect(child.output()).toMatch(/SIGTERM received: stopping\n.*stopped\n$/);
    expect(running(pg)).toBe(false);
    expect(await accepts(pgPort)).toBe(false);
    expect(child.errors()).toBe('');
  }, START_TIMEOUT_MS);

  test('a second start on the same data dir prints no new secret; the old one works and data persists', async () => {
    const child = await started(spawnMain());
    expect(child.output()).not.toContain('root:');
    expect(child.output()).not.toContain('initialising');
    const res = await get('/Patient/5', basic('root', secret));
    expect(res.status).toBe(200);
    expect((await res.json()).name).toEqual([{ family: 'John' }]);
    child.proc.kill('SIGINT');
    expect(await child.proc.exited).toBe(0);
  }, START_TIMEOUT_MS);

  test('after SIGKILL the orphaned PostgreSQL is stopped by the next start, which works', async () => {
    const first = await started(spawnMain());
    const orphan = postmasterPid();
    first.proc.kill('SIGKILL');
    await first.proc.exited;
    expect(running(orphan)).toBe(true);
    expect(await accepts(pgPort)).toBe(true);

    const second = await started(spawnMain());
    expect(second.output()).toContain(`stopping the embedded PostgreSQL (pid ${orphan}) left running by a previous fhirhose`);
    expect(running(orphan)).toBe(false);
    expect(postmasterPid()).not.toBe(orphan);
    expect((await get('/Patient/5', basic('root', secret))).status).toBe(200);

    // while it runs, another start on the same data dir (other ports) is refused and harms nothing
    const intruder = spawnMain({ PORT: String(await freePort()) });
    expect(await intruder.proc.exited).toBe(1);
    expect(intruder.errors()).toContain('is in use by another running fhirhose');
    expect((await get('/Patient/5', basic('root', secret))).status).toBe(200);

    second.proc.kill('SIGTERM');
    expect(await second.proc.exited).toBe(0);
  }, START_TIMEOUT_MS);

  test('PORT already in use → exit 1 with one clear line, no stack trace, no PostgreSQL left', async () => {
    const blocker = net.createServer().listen(port, '127.0.0.1');
    await new Promise((resolve) => blocker.once('listening', resolve));
    try {
      const child = spawnMain();
      expect(await child.proc.exited).toBe(1);
      expect(child.errors()).toBe(`fhirhose: Port ${port} is already in use; stop the other process or set PORT\n`);
      expect(await accepts(pgPort)).toBe(false);
    } finally {
      blocker.close();
    }
  }, START_TIMEOUT_MS);

  test('a bad PORT → exit 2 with one line naming the variable', async () => {
    const child = spawnMain({ PORT: 'eighty' });
    expect(await child.proc.exited).toBe(2);
    expect(child.errors()).toBe('fhirhose: Invalid configuration: PORT="eighty" must be a whole number from 0 to 65535\n');
    expect(child.output()).toBe('');
  }, START_TIMEOUT_MS);
});
