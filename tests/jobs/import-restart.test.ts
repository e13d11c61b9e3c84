/**
 * A server process killed mid-import (SIGKILL), or stopped (SIGTERM), and started again resumes
 * its `active` session from the checkpoints by itself; the tables end with exactly the input's
 * resources: same count and same checksum over (id, resource) as a clean import elsewhere.
 * The server is a real child process running `npm start`'s entry point on a real port.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, type Sql } from '../../src/storage/db.ts';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { startTestServer } from '../helpers/server.ts';
import { spawnServer as spawnChild, client } from '../helpers/child-server.ts';
import { patients, startSourceServer, waitFor, type SourceServer } from '../helpers/import-sources.ts';
const PATIENTS = patients(3000, 'rp');
const OBSERVATIONS = Array.from({ length: 2000 }, (_, i) =>
  JSON.stringify({ resourceType: 'Observation', id: `ro-${i}`, status: 'final', code: { text: `code ${i % 13}` }, valueQuantity: { value: i / 7 } }),
).join('\n') + '\n';

let sources: SourceServer;
let reference: Fingerprint;
const importRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-restart-'));

interface Fingerprint { patients: number; observations: number; patientSum: string; observationSum: string }

async function fingerprint(sql: Sql): Promise<Fingerprint> {
  const sum = async (table: string) => {
    const [row] = await sql.unsafe(`select count(*)::int as n, md5(string_agg(id || ':' || resource::text, ',' order by id)) as sum from ${table}`);
    return row as unknown as { n: number; sum: string };
  };
  const p = await sum('patient');
  const o = await sum('observation');
  return { patients: p.n, observations: o.n, patientSum: p.sum, observationSum: o.sum };
}

function importBody(id: string, slow: boolean) {
  const suffix = slow ? '-slow' : '';
  return { id, inputs: [{ type: 'Patient', url: sources.url(`/Patient${suffix}.ndjson`) }, { type: 'Observation', url: sources.url(`/Observation${suffix}.ndjson`) }] };
}

beforeAll(async () => {
  sources = startSourceServer();
  sources.set('/Patient.ndjson', PATIENTS);
  sources.set('/Observation.ndjson', OBSERVATIONS);
  // The clean import: the same data, no interruption, another fresh database.
  const clean = await startTestServer();
  try {
    const res = await clean.request('/$import', { method: 'POST', json: importBody('clean', false) });
    expect(res.status).toBe(201);
    await waitFor(clean, 'clean', (s) => s.status === 'done');
    reference = await fingerprint(clean.sql);
  } finally {
    await clean.stop();
  }
  expect(reference.patients).toBe(3000);
  expect(reference.observations).toBe(2000);
});

afterAll(async () => {
  await sources.stop();
  fs.rmSync(importRoot, { recursive: true, force: true });
});

const spawnServer = (databaseUrl: string, port: number) =>
  // A killed server's inputs are claimable once its lease ends: 3 s, not the default 15 s.
  spawnChild(databaseUrl, port, { FHIRHOSE_IMPORT_ROOT: importRoot, FHIRHOSE_IMPORT_BATCH_LINES: '100', FHIRHOSE_IMPORT_CONCURRENCY: '2', FHIRHOSE_LEASE_MS: '3000' });

async function crashAndResume(signal: 'SIGKILL' | 'SIGTERM'): Promise<void> {
  const databaseUrl = await freshDatabase();
  const port = await freePort();
  const sql = connect(databaseUrl, { max: 2 });
  try {
    // The slow sources trickle, then hold before their last third until the first server is gone,
    // so the kill lands mid-import however fast or slow the machine is.
    sources.set('/Patient-slow.ndjson', PATIENTS, { trickle: { bytes: 8000, everyMs: 20 }, holdAfter: Math.floor(PATIENTS.length * 0.6) });
    sources.set('/Observation-slow.ndjson', OBSERVATIONS, { trickle: { bytes: 8000, everyMs: 20 }, holdAfter: Math.floor(OBSERVATIONS.length * 0.6) });
    const first = await spawnServer(databaseUrl, port);
    const res = await client(first).request('/$import', { method: 'POST', json: importBody('restart', true) });
    expect(res.status).toBe(201);
    const before = await waitFor(client(first), 'restart', (s) => s.inputs[0].checkpoint >= 300 && s.inputs[1].checkpoint >= 300);
    expect(before.status).toBe('active');
    first.proc.kill(signal);
    const code = await first.proc.exited;
    if (signal === 'SIGTERM') {
      expect(code).toBe(0);
      expect(first.output()).toContain('import restart: stopping with the server');
    }
    sources.release('/Patient-slow.ndjson');
    sources.release('/Observation-slow.ndjson');

    const [left] = await sql`select resource->>'status' as status from bulkimportstatus where id = 'restart'`;
    expect(left!.status).toBe('active');
    const [sum] = await sql`select sum(checkpoint)::int as checkpoints from bulkimport_input where session_id = 'restart'`;
    const checkpoints = sum!.checkpoints as number;
    expect(checkpoints).toBeGreaterThanOrEqual(600);
    expect(checkpoints).toBeLessThan(5000);

    // A staging table no active input will reuse (its session was aborted after a crash) goes at start.
    await sql.unsafe(`create unlogged table _fhirhose_import_0123456789abcdef_0 (line int)`);
    const second = await spawnServer(databaseUrl, port);
    try {
      const done = await waitFor(client(second), 'restart', (s) => s.status !== 'active', 60_000);
      expect(done.status).toBe('done');
      expect(done.imported).toBe(5000);
      expect(second.output()).toContain('import restart: resuming from its checkpoints');
      expect(second.output()).toContain('import restart: active → done');
      expect(await fingerprint(sql)).toEqual(reference);
      const [staging] = await sql`select count(*)::int as n from pg_class where relname like '\_fhirhose\_import\_%'`;
      expect(staging!.n).toBe(0);
    } finally {
      second.proc.kill('SIGTERM');
      await second.proc.exited;
    }
  } finally {
    await sql.end();
  }
}

test('$import resumes from its checkpoints after the server is killed with SIGKILL, nothing lost or doubled', async () => {
  await crashAndResume('SIGKILL');
}, 120_000);

test('$import resumes from its checkpoints after a graceful SIGTERM stop, which leaves the session active', async () => {
  await crashAndResume('SIGTERM');
}, 120_000);
