/**
 * A server process killed (SIGKILL) in the middle of an $export, and another started on the same
 * database and export folder: the new one takes the job over when the lease runs out, goes on from
 * the checkpoint (the parts done stay done), and the manifest has the same counts, and the files
 * the same lines, as $dump of the same rows.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, type Sql } from '../../src/storage/db.ts';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { spawnServer, type Child } from '../helpers/child-server.ts';
import { copyPatients } from '../operations/dump-helpers.ts';
import { kickOff, outputByType, rootRequester, waitForManifest } from '../helpers/export.ts';

const exportDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-export-restart-'));
const ENV = { FHIRHOSE_EXPORT_DIR: exportDir, FHIRHOSE_LEASE_MS: '2000', FHIRHOSE_EXPORT_FILE_RESOURCES: '1000', FHIRHOSE_LOG: 'info' };
let databaseUrl: string;
let sql: Sql;
let children: Child[] = [];


async function until(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await Bun.sleep(10);
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  databaseUrl = await freshDatabase();
  sql = connect(databaseUrl, { max: 3 });
  // a first server migrates the fresh database; then the data goes in with COPY
  children.push(await spawnServer(databaseUrl, await freePort(), ENV));
  await copyPatients(sql, 12_000, 'k');
  const obs = Array.from({ length: 3000 }, (_, i) => `o${i}\t${i + 1}\tcreated\t{"status": "final", "code": {"text": "c${i % 7}"}}\n`).join('');
  const stream = await sql`copy observation (id, txid, status, resource) from stdin`.writable();
  await new Promise<void>((resolve, reject) => stream.end(obs, (err?: Error | null) => (err ? reject(err) : resolve())));
}, 120_000);

afterAll(async () => {
  for (const c of children) c.proc.kill('SIGKILL');
  await sql?.end();
  fs.rmSync(exportDir, { recursive: true, force: true });
});

test('SIGKILL mid-export, another server takes over after the lease: same counts, same lines as $dump', async () => {
  const first = children[0]!;
  const status = await kickOff(rootRequester(first), '/$export?_type=Patient,Observation');
  const id = status.split('/').pop()!;
  // A run works on two parts at once: the small Observation part is done first while the Patient
  // COPY (12,000 Patients) goes on. Once the Observation part is committed, hold export_file
  // against writes: the Patient part cannot commit, and the server dies with it in flight.
  await until('the Observation part checkpoint', async () => (await sql`select 1 from export_file where job_id = ${id} and type = 'Observation'`).length > 0);
  const holder = await sql.reserve();
  await holder`begin`;
  await holder`lock table export_file in exclusive mode`;
  const [before] = await sql`select done_parts, state from export_job where id = ${id}`;
  expect(before!.state).toBe('running');
  const doneFiles = await sql`select name, etag from export_file where job_id = ${id} order by name`;
  expect(doneFiles.map((f) => String(f.name))).toEqual(['Observation.000.ndjson', 'Observation.001.ndjson', 'Observation.002.ndjson']);

  first.proc.kill('SIGKILL');
  await first.proc.exited;
  await holder`rollback`;
  holder.release();

  const second = await spawnServer(databaseUrl, await freePort(), ENV);
  children.push(second);
  const manifest = await waitForManifest(rootRequester(second), status, { timeoutMs: 60_000 });
  expect(second.output()).toContain(`export ${id}: resuming after`);
  const counts = (type: string) => manifest.output.filter((o) => o.type === type).reduce((n, o) => n + o.count, 0);
  expect(counts('Patient')).toBe(12_000);
  expect(counts('Observation')).toBe(3000);
  // the files of the part done before the kill were kept, not written again
  const after = await sql`select name, etag from export_file where job_id = ${id} and type = 'Observation' order by name`;
  expect(after).toEqual(doneFiles);

  const files = await outputByType(rootRequester(second), manifest);
  for (const type of ['Patient', 'Observation']) {
    const res = await rootRequester(second).request(`/${type}/$dump`, { headers: { 'accept-encoding': 'identity' } });
    const dumped = (await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);
    expect((files.get(type) as { id: string }[]).sort(byId)).toEqual(dumped.sort(byId));
  }
}, 180_000);
