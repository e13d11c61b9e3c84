/** Clients and AccessPolicies for auth tests, written through the API as root (`PUT /`). */
import { expect } from 'bun:test';
import { basic, ROOT_SECRET, type TestServer } from './server.ts';

export interface TestClient {
  id: string;
  secret: string;
  /** The `Authorization` header of this client. */
  auth: string;
}

export async function putResources(server: TestServer, resources: Record<string, unknown>[]): Promise<unknown[]> {
  const res = await server.request('/', { method: 'PUT', json: resources });
  const body = await res.json();
  expect({ status: res.status, body }).toMatchObject({ status: 200 });
  return body as unknown[];
}

/** A Client with a secret, plus the given AccessPolicies (each linked to it unless `link` is set). */
export async function addClient(server: TestServer, id: string, policies: Record<string, unknown>[] = []): Promise<TestClient> {
  const secret = `${id}-secret`;
  await putResources(server, [
    { resourceType: 'Client', id, secret, grant_types: ['basic'] },
    ...policies.map((p, i) => ({ resourceType: 'AccessPolicy', id: `${id}-policy-${i}`, link: [{ resourceType: 'Client', id }], ...p })),
  ]);
  return { id, secret, auth: basic(id, secret) };
}

/** Removes every AccessPolicy, so each test states its own. */
export async function clearPolicies(server: TestServer): Promise<void> {
  const res = await server.request('/AccessPolicy?_count=10000');
  const bundle = (await res.json()) as { entry: { resource: { id: string } }[] };
  for (const e of bundle.entry) {
    const del = await server.request(`/AccessPolicy/${e.resource.id}`, { method: 'DELETE' });
    expect(del.status).toBe(204);
  }
}

/**
 * One `$dump` read at full speed by a `curl` process (its own core, not this test's event loop):
 * the HTTP status and the number of body lines.
 */
export async function curlDump(url: string): Promise<{ status: number; lines: number }> {
  const curl = Bun.spawn(['curl', '-sS', '-H', `authorization: ${basic('root', ROOT_SECRET)}`, '-H', 'accept-encoding: identity',
    '-w', '\n%{http_code}', url], { stdout: 'pipe', stderr: 'pipe' });
  let newlines = 0;
  let tail = '';
  for await (const chunk of curl.stdout) {
    for (const byte of chunk) if (byte === 0x0a) newlines++;
    tail = (tail + Buffer.from(chunk.subarray(-8)).toString('latin1')).slice(-8);
  }
  await curl.exited;
  // the body's lines, then `\n<status>` written by -w
  return { status: Number(tail.slice(tail.lastIndexOf('\n') + 1)), lines: newlines - 1 };
}
