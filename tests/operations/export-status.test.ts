/** $export status protocol (SPEC §12): every state's answer, DELETE before/during/after, downloads with Range and ETag. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { copyPatients } from './dump-helpers.ts';
import { kickOff, waitForManifest, type Manifest } from '../helpers/export.ts';
import { exportStatus } from '../../src/operations/export.ts';
import { connect } from '../../src/storage/db.ts';
import { loadConfig } from '../../src/config.ts';

let server: TestServer;
let exportDir: string;
beforeAll(async () => {
  exportDir = fs.mkdtempSync('/tmp/fhirhose-exports-');
  server = await startTestServer({ FHIRHOSE_EXPORT_DIR: exportDir, FHIRHOSE_LEASE_MS: '3000' });
  await copyPatients(server.sql, 300);
  await server.request('/', { method: 'PUT', json: [{ resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'x' } }] });
});
afterAll(async () => {
  await server.stop();
  fs.rmSync(exportDir, { recursive: true, force: true });
});

const idOf = (statusPath: string) => statusPath.split('/').pop()!;

/** Holds `table` locked so an export that reads it stays running until `release()`. */
async function lockTable(table: string): Promise<() => Promise<void>> {
  const conn = await server.sql.reserve();
  await conn`begin`;
  await conn.unsafe(`lock table ${table} in access exclusive mode`);
  return async () => { await conn`rollback`; conn.release(); };
}

/** Waits (bounded) until an export backend is blocked on a lock, i.e. the job is running. */
async function exportWaiting(): Promise<number> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const rows = await server.sql`select pid from pg_stat_activity where datname = current_database()
      and application_name = 'fhirhose-export' and wait_event_type = 'Lock'`;
    if (rows.length) return Number(rows[0]!.pid);
    await Bun.sleep(25);
  }
  throw new Error('no export waiting on the lock');
}

/** Waits (bounded) until no export backend is in a transaction any more. */
async function exportsIdle(): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const rows = await server.sql`select pid from pg_stat_activity where datname = current_database() and application_name = 'fhirhose-export'`;
    if (rows.length === 0) return;
    await Bun.sleep(25);
  }
  throw new Error('export backends still busy');
}

describe('$export status: every state', () => {
  test('running → 202 with X-Progress and Retry-After, no body; done → 200 manifest with Expires', async () => {
    const release = await lockTable('observation');
    const status = await kickOff(server, '/$export?_type=Observation');
    await exportWaiting();
    const res = await server.request(status, { headers: { accept: 'application/json' } });
    expect(res.status).toBe(202);
    expect(res.headers.get('x-progress')).toMatch(/^0% \(0 of \d+ resources\)$/);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(await res.text()).toBe('');
    await release();
    const manifest = await waitForManifest(server, status);
    expect(manifest.output).toEqual([{ type: 'Observation', url: expect.any(String), count: 1 }]);
    const done = await server.request(status);
    const expires = Date.parse(done.headers.get('expires')!);
    expect(expires - Date.now()).toBeGreaterThan(23 * 3600_000);
    expect(expires - Date.now()).toBeLessThanOrEqual(24 * 3600_000 + 1000);
  });

  test('a job that fails → its status is 500 + OperationOutcome saying so', async () => {
    const release = await lockTable('observation');
    const status = await kickOff(server, '/$export?_type=Observation');
    const pid = await exportWaiting();
    await server.sql`select pg_cancel_backend(${pid})`;
    await release();
    const deadline = Date.now() + 20_000;
    let res = await server.request(status);
    while (res.status === 202 && Date.now() < deadline) {
      await Bun.sleep(25);
      res = await server.request(status);
    }
    expect(res.status).toBe(500);
    const body = await res.json();
    expect(body.resourceType).toBe('OperationOutcome');
    expect(body.issue[0].diagnostics).toContain(`Export ${idOf(status)} failed`);
  });

  test('a poll that cannot read the status (database away) is a transient 503, not a failed export', async () => {
    const closed = connect(server.databaseUrl);
    await closed.end();
    const ctx = { sql: closed, config: loadConfig({ FHIRHOSE_LOG: 'quiet' }), log: () => {}, changed: () => {} };
    const err = await exportStatus(ctx, { clientId: 'root' }, crypto.randomUUID(), 'http://x').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unavailable', status: 503 });
  });

  test('Prefer: respond-async,separate-export-status → the poll answers 200 and X-Export-Status carries the job status', async () => {
    const release = await lockTable('observation');
    const res = await server.request('/$export?_type=Observation', { headers: { prefer: 'respond-async,separate-export-status' } });
    expect(res.status).toBe(202);
    expect(res.headers.get('preference-applied')).toBe('respond-async, separate-export-status');
    const status = new URL(res.headers.get('content-location')!).pathname;
    await exportWaiting();
    const running = await server.request(status);
    expect([running.status, running.headers.get('x-export-status')]).toEqual([200, '202']);
    expect(running.headers.get('x-progress')).toMatch(/^0%/);
    await running.arrayBuffer();
    await release();
    const deadline = Date.now() + 20_000;
    let done = await server.request(status);
    while (done.headers.get('x-export-status') === '202' && Date.now() < deadline) {
      await done.arrayBuffer();
      await Bun.sleep(25);
      done = await server.request(status);
    }
    expect([done.status, done.headers.get('x-export-status')]).toEqual([200, '200']);
    expect((await done.json()).output).toHaveLength(1);
    // without the preference: the plain protocol
    const plain = await server.request('/$export?_type=Observation', { headers: { prefer: 'respond-async' } });
    expect(plain.headers.get('preference-applied')).toBe('respond-async');
  });

  test('an unknown or malformed id → 404 OperationOutcome', async () => {
    for (const id of [crypto.randomUUID(), 'not..an/id', 'x'.repeat(80)]) {
      const res = await server.request(`/$export-status/${encodeURIComponent(id)}`);
      expect(res.status).toBe(404);
      expect((await res.json()).resourceType).toBe('OperationOutcome');
    }
  });
});

describe('$export DELETE', () => {
  test('before: an export that does not exist → 404', async () => {
    expect((await server.request(`/$export-status/${crypto.randomUUID()}`, { method: 'DELETE' })).status).toBe(404);
  });

  test('during: 202, then 404 at once, the job stops and leaves no file behind', async () => {
    const release = await lockTable('observation');
    const status = await kickOff(server, '/$export?_type=Patient,Observation');
    await exportWaiting();
    const del = await server.request(status, { method: 'DELETE' });
    expect(del.status).toBe(202);
    expect((await server.request(status)).status).toBe(404);
    await release();
    await exportsIdle();
    expect(fs.existsSync(path.join(exportDir, idOf(status)))).toBe(false);
    const [row] = await server.sql`select count(*)::int as n from export_file where job_id = ${idOf(status)}`;
    expect(row!.n).toBe(0);
  });

  test('after: 202, then the status and every file → 404, and the folder is gone', async () => {
    const status = await kickOff(server, '/$export?_type=Patient');
    const manifest = await waitForManifest(server, status);
    expect(fs.existsSync(path.join(exportDir, idOf(status)))).toBe(true);
    expect((await server.request(status, { method: 'DELETE' })).status).toBe(202);
    expect((await server.request(status)).status).toBe(404);
    expect((await server.request(new URL(manifest.output[0]!.url).pathname)).status).toBe(404);
    expect(fs.existsSync(path.join(exportDir, idOf(status)))).toBe(false);
    expect((await server.request(status, { method: 'DELETE' })).status).toBe(404);
  });
});

describe('$export files', () => {
  let manifest: Manifest;
  let file: string;
  let plain: Buffer;
  beforeAll(async () => {
    manifest = await waitForManifest(server, await kickOff(server, '/$export?_type=Patient'));
    file = new URL(manifest.output[0]!.url).pathname;
    const res = await server.request(file, { headers: { 'accept-encoding': 'identity' } });
    plain = Buffer.from(await res.arrayBuffer());
  });

  test('stored gzipped under FHIRHOSE_EXPORT_DIR; plain when gzip is not accepted, gzip bytes with Content-Encoding when it is', async () => {
    const stored = fs.readFileSync(path.join(exportDir, file.split('/')[2]!, `${file.split('/')[3]}.gz`));
    expect(gunzipSync(stored).equals(plain)).toBe(true);
    expect(plain.toString().split('\n').filter(Boolean)).toHaveLength(manifest.output[0]!.count);
    const gz = await fetch(server.url + file, { headers: { authorization: (await import('../helpers/server.ts')).basic('root', 'test-root-secret'), 'accept-encoding': 'gzip' }, decompress: false } as RequestInit);
    expect(gz.headers.get('content-encoding')).toBe('gzip');
    expect(gz.headers.get('content-type')).toBe('application/fhir+ndjson');
    expect(Buffer.from(await gz.arrayBuffer()).equals(stored)).toBe(true);
  });

  test('a download resumed with Range (and If-Range) gives the same bytes; a stale If-Range gives the whole file', async () => {
    const first = await server.request(file, { headers: { 'accept-encoding': 'identity', range: 'bytes=0-999' } });
    expect(first.status).toBe(206);
    expect(first.headers.get('content-range')).toBe(`bytes 0-999/${plain.length}`);
    const etag = first.headers.get('etag')!;
    const head = Buffer.from(await first.arrayBuffer());
    const rest = await server.request(file, { headers: { 'accept-encoding': 'identity', range: 'bytes=1000-', 'if-range': etag } });
    expect(rest.status).toBe(206);
    expect(Buffer.concat([head, Buffer.from(await rest.arrayBuffer())]).equals(plain)).toBe(true);
    const suffix = await server.request(file, { headers: { 'accept-encoding': 'identity', range: 'bytes=-10' } });
    expect(Buffer.from(await suffix.arrayBuffer()).equals(plain.subarray(plain.length - 10))).toBe(true);
    const stale = await server.request(file, { headers: { 'accept-encoding': 'identity', range: 'bytes=1000-', 'if-range': '"other"' } });
    expect(stale.status).toBe(200);
    expect(Buffer.from(await stale.arrayBuffer()).equals(plain)).toBe(true);
  });

  test('ETag: If-None-Match → 304; a range past the end → 416 with the size', async () => {
    const res = await server.request(file, { headers: { 'accept-encoding': 'identity' } });
    await res.arrayBuffer();
    const again = await server.request(file, { headers: { 'accept-encoding': 'identity', 'if-none-match': res.headers.get('etag')! } });
    expect(again.status).toBe(304);
    const past = await server.request(file, { headers: { 'accept-encoding': 'identity', range: `bytes=${plain.length}-` } });
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${plain.length}`);
  });

  test('a file name that is not in the manifest → 404', async () => {
    const id = file.split('/')[2];
    for (const name of ['Patient.999.ndjson', '..%2F..%2Fetc%2Fpasswd', 'x']) {
      expect((await server.request(`/$export-file/${id}/${name}`)).status).toBe(404);
    }
  });
});
