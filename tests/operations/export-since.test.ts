/**
 * Incremental $export (SPEC §12): export, change things, export `_since` the first
 * transactionTime → exactly the changes and the deletions; a transaction in flight while an
 * export starts is caught by the next incremental one.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { download, kickOff, outputByType, waitForManifest, type Manifest } from '../helpers/export.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
  const put = await server.request('/', { method: 'PUT', json: [
    ...['p1', 'p2', 'p3', 'p4'].map((id) => ({ resourceType: 'Patient', id, name: [{ family: id }] })),
    { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'a' }, subject: { reference: 'Patient/p1' } },
    { resourceType: 'Observation', id: 'o2', status: 'final', code: { text: 'b' }, subject: { reference: 'Patient/p2' } },
  ] });
  expect(put.status).toBe(200);
});
afterAll(async () => { await server.stop(); });

const ids = (lines: Record<string, any>[] | undefined) => (lines ?? []).map((l) => l.id as string).sort();

async function run(query: string): Promise<{ manifest: Manifest; files: Map<string, Record<string, any>[]>; deleted: Record<string, any>[] }> {
  const manifest = await waitForManifest(server, await kickOff(server, `/$export?${query}`));
  const deleted: Record<string, any>[] = [];
  for (const item of manifest.deleted) {
    expect(item.type).toBe('Bundle');
    const lines = await download(server, item.url);
    expect(lines.length).toBe(item.count);
    deleted.push(...lines);
  }
  return { manifest, files: await outputByType(server, manifest), deleted };
}

const write = (method: string, path: string, json?: unknown) => server.request(path, { method, ...(json ? { json } : {}) }).then((r) => r.status);

describe('$export _since chains', () => {
  test('export, write and delete, export _since the first transactionTime → exactly the changes and the deletions', async () => {
    const first = await run('_type=Patient,Observation');
    expect(ids(first.files.get('Patient'))).toEqual(['p1', 'p2', 'p3', 'p4']);
    expect(first.deleted).toEqual([]);
    const t1 = first.manifest.transactionTime;

    expect(await write('PUT', '/Patient/p1', { resourceType: 'Patient', id: 'p1', name: [{ family: 'changed' }] })).toBe(200);
    expect(await write('POST', '/Patient', { resourceType: 'Patient', id: 'p5' })).toBe(201);
    expect(await write('DELETE', '/Patient/p2')).toBe(204);
    expect(await write('DELETE', '/Observation/o1')).toBe(204);
    // deleted and created again: in the output, not in deleted
    expect(await write('DELETE', '/Patient/p3')).toBe(204);
    expect(await write('PUT', '/Patient/p3', { resourceType: 'Patient', id: 'p3', active: true })).toBe(201);
    // created and deleted since: a deletion the client can apply (it never saw the resource)
    expect(await write('POST', '/Observation', { resourceType: 'Observation', id: 'o9', status: 'final', code: { text: 'c' } })).toBe(201);
    expect(await write('DELETE', '/Observation/o9')).toBe(204);

    const second = await run(`_type=Patient,Observation&_since=${encodeURIComponent(t1)}`);
    expect(ids(second.files.get('Patient'))).toEqual(['p1', 'p3', 'p5']);
    expect(second.files.get('Observation')).toBeUndefined();
    expect(second.files.get('Patient')!.find((p) => p.id === 'p1')!.name).toEqual([{ family: 'changed' }]);
    const urls = second.deleted.map((b) => {
      expect([b.resourceType, b.type]).toEqual(['Bundle', 'transaction']);
      expect(b.entry).toHaveLength(1);
      expect(b.entry[0].request.method).toBe('DELETE');
      // the deletion's time, after the first export's transactionTime
      expect(Date.parse(b.meta.lastUpdated)).toBeGreaterThan(Date.parse(t1));
      return b.entry[0].request.url as string;
    }).sort();
    expect(urls).toEqual(['Observation/o1', 'Observation/o9', 'Patient/p2']);
    expect(second.manifest.deleted.map((d) => d.count).reduce((a, b) => a + b, 0)).toBe(3);

    // nothing changed since the second export: the third is empty
    const third = await run(`_type=Patient,Observation&_since=${encodeURIComponent(second.manifest.transactionTime)}`);
    expect(third.manifest.output).toEqual([]);
    expect(third.deleted).toEqual([]);
  });

  test('a write transaction open while an export starts is in the next export _since its transactionTime', async () => {
    const writer = await server.sql.reserve();
    try {
      await writer`begin`;
      // lastUpdated = the transaction's start, which comes before the export's snapshot
      await writer`insert into patient (id, txid, status, resource) values ('late', nextval('transaction_id_seq'), 'created', '{"active": true}')`;
      const during = await run('_type=Patient');
      expect(ids(during.files.get('Patient'))).not.toContain('late');
      await writer`commit`;
      const [row] = await server.sql`select to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as ts from patient where id = 'late'`;
      // the in-flight write is older than the export's snapshot, yet the transactionTime is older still
      expect(Date.parse(during.manifest.transactionTime)).toBeLessThan(Date.parse(row!.ts) + 1);
      expect(during.manifest.transactionTime < row!.ts).toBe(true);
      const next = await run(`_type=Patient&_since=${encodeURIComponent(during.manifest.transactionTime)}`);
      expect(ids(next.files.get('Patient'))).toContain('late');
    } finally {
      writer.release();
    }
  });

  test('with _since, the deletions respect _type', async () => {
    const before = await run('_type=Observation');
    expect(await write('DELETE', '/Patient/p4')).toBe(204);
    expect(await write('DELETE', '/Observation/o2')).toBe(204);
    const after = await run(`_type=Observation&_since=${encodeURIComponent(before.manifest.transactionTime)}`);
    expect(after.deleted.map((b) => b.entry[0].request.url)).toEqual(['Observation/o2']);
  });
});
