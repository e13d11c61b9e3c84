/**
 * A server killed (SIGKILL) at a moment chosen at random during an $export of several types (the
 * run's three workers over two COPY slots, the biggest table first, files fsynced after a part's
 * COPY), then another server on the same database and folder: each manifest has every resource
 * exactly once, the same lines as $dump. The moments are printed, so a failure can be replayed
 * with EXPORT_CRASH_MS=a,b,c.
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

const exportDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-export-moments-'));
const ENV = { FHIRHOSE_EXPORT_DIR: exportDir, FHIRHOSE_LEASE_MS: '1500', FHIRHOSE_EXPORT_FILE_RESOURCES: '700', FHIRHOSE_LOG: 'info' };
const TYPES = ['Patient', 'Observation', 'Condition', 'Encounter'];
let databaseUrl: string;
let sql: Sql;
const children: Child[] = [];


async function copyRows(table: string, n: number, resource: (i: number) => string): Promise<void> {
  const text = Array.from({ length: n }, (_, i) => `${table[0]}${i}\t${i + 1}\tcreated\t${resource(i)}\n`).join('');
  const stream = await sql.unsafe(`copy ${table} (id, txid, status, resource) from stdin`).writable();
  await new Promise<void>((resolve, reject) => stream.end(text, (err?: Error | null) => (err ? reject(err) : resolve())));
}

beforeAll(async () => {
  databaseUrl = await freshDatabase();
  sql = connect(databaseUrl, { max: 3 });
  children.push(await spawnServer(databaseUrl, await freePort(), ENV));
  await copyPatients(sql, 6000, 'k');
  await copyRows('observation', 4000, (i) => `{"status": "final", "code": {"text": "c${i % 7}"}, "subject": {"reference": "Patient/k${i % 6000}"}}`);
  await copyRows('condition', 2500, (i) => `{"code": {"text": "d${i % 5}"}, "subject": {"reference": "Patient/k${i}"}}`);
  await copyRows('encounter', 1500, (i) => `{"class": {"code": "AMB"}, "status": "finished", "subject": {"reference": "Patient/k${i}"}}`);
}, 120_000);

afterAll(async () => {
  for (const c of children) c.proc.kill('SIGKILL');
  await sql?.end();
  fs.rmSync(exportDir, { recursive: true, force: true });
});

test('SIGKILL at random moments of an export: the next server finishes it with every resource once', async () => {
  const dumped = new Map<string, string[]>();
  for (const type of TYPES) {
    const res = await rootRequester(children[0]!).request(`/${type}/$dump`, { headers: { 'accept-encoding': 'identity' } });
    dumped.set(type, (await res.text()).split('\n').filter(Boolean).map((l) => JSON.stringify(JSON.parse(l))).sort());
  }
  // how long this machine takes for the export uncrashed (its manifest is checked too)
  const t0 = performance.now();
  const whole = await waitForManifest(rootRequester(children[0]!), await kickOff(rootRequester(children[0]!), `/$export?_type=${TYPES.join(',')}`));
  const took = performance.now() - t0;
  expect(whole.output.reduce((n, o) => n + o.count, 0)).toBe([...dumped.values()].reduce((n, l) => n + l.length, 0));
  // early (planning, the first COPYs), middle, late (last parts, fsyncs, the final commit, or done)
  const at = (from: number, span: number) => Math.floor(took * (from + Math.random() * span));
  const moments = process.env.EXPORT_CRASH_MS?.split(',').map(Number) ?? [at(0, 0.3), at(0.3, 0.4), at(0.7, 0.5)];
  console.log(`export-crash-moments: uncrashed ${Math.round(took)} ms; SIGKILL ${moments.join(', ')} ms after the kick-off answered (EXPORT_CRASH_MS to replay)`);
  const states: string[] = [];
  for (const ms of moments) {
    const server = children[children.length - 1]!;
    const status = await kickOff(rootRequester(server), `/$export?_type=${TYPES.join(',')}`);
    await Bun.sleep(ms);
    const [job] = await sql`select state, cardinality(done_parts) as done from export_job where id = ${status.split('/').pop()!}`;
    server.proc.kill('SIGKILL');
    states.push(`${ms} ms: ${job!.state}, ${job!.done} parts done`);
    await server.proc.exited;
    const next = await spawnServer(databaseUrl, await freePort(), ENV);
    children.push(next);
    const manifest = await waitForManifest(rootRequester(next), status, { timeoutMs: 60_000 });
    const files = await outputByType(rootRequester(next), manifest);
    for (const type of TYPES) {
      const lines = (files.get(type) ?? []).map((r) => JSON.stringify(r)).sort();
      // every resource once: nothing lost, nothing doubled, each line as $dump gives it
      expect({ ms, type, count: lines.length, same: lines.join('\n') === dumped.get(type)!.join('\n') })
        .toEqual({ ms, type, count: dumped.get(type)!.length, same: true });
    }
  }
  console.log(`export-crash-moments: at each SIGKILL the job was ${states.join('; ')}`);
  // not vacuous: the first moment, in the first 30 % of the uncrashed time, finds it unfinished
  expect(states[0]).not.toContain('done,');
}, 240_000);
