/**
 * fhirhose as a real child process running `npm start`'s entry point on a real port: for tests
 * that kill it, or that need to see it survive what happens to its database.
 */
import os from 'node:os';
import path from 'node:path';
import { basic, ROOT_SECRET } from './server.ts';
import type { waitFor } from './import-sources.ts';

const ROOT = path.resolve(import.meta.dir, '../..');
const AUTH = basic('root', ROOT_SECRET);

export interface Child { url: string; proc: ReturnType<typeof Bun.spawn>; output: () => string }

export async function spawnServer(databaseUrl: string, port: number, env: Record<string, string> = {}): Promise<Child> {
  const proc = Bun.spawn([process.execPath, 'src/main.ts'], {
    cwd: ROOT,
    env: {
      ...process.env, DATABASE_URL: databaseUrl, PORT: String(port), HOST: '127.0.0.1', FHIRHOSE_ROOT_SECRET: ROOT_SECRET,
      FHIRHOSE_LOG: 'info',
      // one export folder per database (servers of one database share it, as replicas do; a server
      // sweeps the folders its database does not know, so other databases' servers must not see them)
      FHIRHOSE_EXPORT_DIR: path.join(os.tmpdir(), `fhirhose-exports-${new URL(databaseUrl).pathname.slice(1)}`),
      ...env,
    },
    stdout: 'pipe',
    stderr: 'pipe',
  });
  let text = '';
  const drain = async (stream: ReadableStream<Uint8Array>) => { for await (const chunk of stream) text += new TextDecoder().decode(chunk); };
  void drain(proc.stdout as ReadableStream<Uint8Array>);
  void drain(proc.stderr as ReadableStream<Uint8Array>);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}: ${text}`);
    if (await fetch(`${url}/health`).then((r) => r.ok, () => false)) return { url, proc, output: () => text };
    await Bun.sleep(50);
  }
  proc.kill('SIGKILL');
  throw new Error(`server did not start: ${text}`);
}

/** The child seen through the same helpers as an in-process test server. */
export function client(child: Child): Parameters<typeof waitFor>[0] {
  return {
    request: (pathname: string, init: RequestInit & { json?: unknown } = {}) =>
      fetch(child.url + pathname, {
        ...init,
        headers: { authorization: AUTH, 'content-type': 'application/json' },
        body: init.json === undefined ? init.body : JSON.stringify(init.json),
      }).catch(async (err: unknown) => {
        // a server that is gone says why (its exit code and last output), not only ECONNREFUSED
        const code = await Promise.race([child.proc.exited, Bun.sleep(1000).then(() => 'still running')]);
        throw new Error(`${pathname}: ${(err as Error).message}; the server (pid ${child.proc.pid}) ${typeof code === 'number' ? `exited with ${code}` : 'is still running'}; its output ends:\n${child.output().slice(-3000)}`);
      }),
  } as Parameters<typeof waitFor>[0];
}
