/** A real fhirhose on a free port, on a fresh database clone, spoken to with real `fetch`. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config.ts';
import { startServer, type RunningServer } from '../../src/server.ts';
import { freshDatabase } from './database.ts';

export const ROOT_SECRET = 'test-root-secret';

export interface TestServer extends RunningServer {
  importRoot: string;
  /** fetch relative to the server, as root unless `auth` is given (`null` for none). */
  request(pathname: string, init?: RequestInit & { auth?: string | null; yaml?: boolean; json?: unknown }): Promise<Response>;
}

export function basic(id: string, secret: string): string {
  return 'Basic ' + Buffer.from(`${id}:${secret}`).toString('base64');
}

/** `log` receives the server's log lines (otherwise FHIRHOSE_LOG decides, quiet by default). */
export async function startTestServer(env: Record<string, string> = {}, options: { log?: (line: string) => void } = {}): Promise<TestServer> {
  const importRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-import-'));
  // each server's own: a server sweeps the export folders its database does not know, so servers
  // on other databases sharing ./data/exports removed each other's files mid-test
  const exportDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-exports-'));
  const config = loadConfig({
    FHIRHOSE_EXPORT_DIR: exportDir,
    PORT: '0',
    HOST: '127.0.0.1',
    DATABASE_URL: await freshDatabase(),
    FHIRHOSE_ROOT_SECRET: ROOT_SECRET,
    FHIRHOSE_IMPORT_ROOT: importRoot,
    FHIRHOSE_LOG: 'quiet',
    // a test that ends with a stalled client should not wait the production grace (20 s) to stop
    FHIRHOSE_SHUTDOWN_GRACE_MS: '1000',
    ...env,
  });
  const server = await startServer(config, options.log);
  return {
    ...server,
    importRoot,
    async stop() {
      await server.stop();
      fs.rmSync(importRoot, { recursive: true, force: true });
      fs.rmSync(exportDir, { recursive: true, force: true });
    },
    request(pathname, init = {}) {
      const { auth = basic('root', ROOT_SECRET), json, yaml: _yaml, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (auth !== null) headers.set('authorization', auth);
      let body = rest.body;
      if (json !== undefined) {
        body = JSON.stringify(json);
        if (!headers.has('content-type')) headers.set('content-type', 'application/json');
      }
      return fetch(server.url + pathname, { ...rest, headers, body });
    },
  };
}
