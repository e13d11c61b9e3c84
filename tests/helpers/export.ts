/** Bulk Data client steps for the $export tests: kick off, poll as a client does, download. */
import { expect } from 'bun:test';
import { gunzipSync } from 'node:zlib';
import { basic, ROOT_SECRET } from './server.ts';

/** What the tests need of a server: fetch relative to it with credentials. */
export interface Requester {
  request(pathname: string, init?: RequestInit & { auth?: string | null; json?: unknown }): Promise<Response>;
}

/** A server process (tests/helpers/child-server.ts) as root: `json` is sent as the JSON body. */
export function rootRequester(child: { url: string }): Requester {
  return {
    request: (pathname, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', basic('root', ROOT_SECRET));
      if (init.json !== undefined) headers.set('content-type', 'application/json');
      return fetch(child.url + pathname, { ...init, headers, body: init.json !== undefined ? JSON.stringify(init.json) : init.body });
    },
  };
}

export interface ManifestItem { type: string; url: string; count: number }
export interface Manifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  output: ManifestItem[];
  deleted: ManifestItem[];
  error: ManifestItem[];
}

const PREFER = { prefer: 'respond-async', accept: 'application/fhir+json' };

/** Kick-off; returns the status URL's path (the Content-Location is absolute). */
export async function kickOff(server: Requester, pathname: string, init: RequestInit & { auth?: string | null; json?: unknown } = {}): Promise<string> {
  const res = await server.request(pathname, { ...init, headers: { ...PREFER, ...(init.headers as Record<string, string>) } });
  const body = await res.text();
  expect({ status: res.status, body }).toMatchObject({ status: 202 });
  const location = res.headers.get('content-location')!;
  expect(location).toMatch(/^https?:\/\/[^/]+\/.*\$export-status\/[0-9a-f-]+$/);
  return new URL(location).pathname;
}

/** Polls (Accept: application/json) until 200; every 202 must carry the headers clients rely on. */
export async function waitForManifest(server: Requester, statusPath: string, options: { auth?: string; timeoutMs?: number } = {}): Promise<Manifest> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  while (Date.now() < deadline) {
    const res = await server.request(statusPath, { headers: { accept: 'application/json' }, ...(options.auth ? { auth: options.auth } : {}) });
    if (res.status === 200) return (await res.json()) as Manifest;
    const text = await res.text();
    expect({ status: res.status, text }).toMatchObject({ status: 202 });
    expect(res.headers.get('x-progress')).toMatch(/^\d{1,3}%/);
    expect(res.headers.get('retry-after')).toMatch(/^([1-9]|[1-5]\d|60)$/);
    await Bun.sleep(50);
  }
  throw new Error(`export ${statusPath} did not complete in time`);
}

/** A file's lines (downloaded gzip, the default of real clients), parsed. */
export async function download(server: Requester, url: string, auth?: string): Promise<Record<string, any>[]> {
  const res = await server.request(new URL(url).pathname, { headers: { 'accept-encoding': 'gzip' }, ...(auth ? { auth } : {}) });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('application/fhir+ndjson');
  // fetch decodes Content-Encoding: gzip by itself
  const text = await res.text();
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Every output line of a manifest by type, checking each file's count and each line's type. */
export async function outputByType(server: Requester, manifest: Manifest, auth?: string): Promise<Map<string, Record<string, any>[]>> {
  const byType = new Map<string, Record<string, any>[]>();
  for (const item of manifest.output) {
    const lines = await download(server, item.url, auth);
    expect(lines.length).toBe(item.count);
    for (const line of lines) expect(line.resourceType).toBe(item.type);
    byType.set(item.type, [...(byType.get(item.type) ?? []), ...lines]);
  }
  return byType;
}

export { gunzipSync };
