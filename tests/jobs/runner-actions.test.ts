/**
 * SPEC §11 actions across servers, real processes: a `pause` sent to server A reaches server B,
 * which runs the inputs, at once: B commits no batch after the pause answered and hands its inputs
 * back, even one waiting on a source that sends nothing; `resume` through server C makes them
 * claimable again. Then a server stopped with SIGTERM hands its inputs back at a batch boundary
 * and the others claim them at once, not after the lease. The session ends with exactly the sources.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startSourceServer, type SourceServer } from '../helpers/import-sources.ts';
import {
  INPUTS, LINES, client, expectExactImport, expectFencedBatches, importRequest, inputBody, startCluster, waitFor, type Cluster,
} from '../helpers/cluster.ts';

let sources: SourceServer;
let cluster: Cluster;
const HELD = INPUTS - 1;

beforeAll(async () => {
  sources = startSourceServer();
  for (let k = 0; k < INPUTS; k++) {
    const body = inputBody(k);
    // the last input stops sending after its first 3,000 lines until released: its server waits on it
    const behaviour = k === HELD ? { holdAfter: body.split('\n').slice(0, 3000).join('\n').length + 1 } : { trickle: { bytes: 16 * 1024, everyMs: 20 } };
    sources.set(`/in${k}.ndjson`, body, behaviour);
  }
  // A long lease: the servers' heartbeats come every 10 s, so only NOTIFY makes them stop sooner.
  cluster = await startCluster(3, {
    FHIRHOSE_LEASE_MS: '30000', FHIRHOSE_IMPORT_BATCH_LINES: '250', FHIRHOSE_JOB_CONCURRENCY: '2', FHIRHOSE_IMPORT_CONCURRENCY: '2',
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  await sources.stop();
}, 30_000);

async function batches(owner?: string): Promise<number> {
  const [row] = owner === undefined
    ? await cluster.sql`select count(*)::int as n from audit_batch`
    : await cluster.sql`select count(*)::int as n from audit_batch where owner = ${owner}`;
  return row!.n as number;
}

test('pause through server A stops server B at its next batch; resume through server C; SIGTERM hands inputs back at once; the session ends exact', async () => {
  const [a] = cluster.servers;
  expect((await client(a!).request('/$import', { method: 'POST', json: importRequest(sources, 'act') })).status).toBe(201);
  // every input running somewhere, the held one waiting on its source after its first lines
  const running = await waitFor(client(a!), 'act', (s) =>
    s.inputs.every((i: any, k: number) => i.owner && (k === HELD ? i.checkpoint >= 2500 : i.checkpoint >= 500 && i.checkpoint < LINES)), 60_000);
  const owners = new Set<string>(running.inputs.map((i: any) => i.owner));
  const aOwner = [...owners].find((o) => a!.output().includes(`job runner ${o}:`));
  const bOwner = [...owners].find((o) => o !== aOwner)!;
  const b = cluster.servers.find((s) => s.output().includes(`job runner ${bOwner}:`))!;
  const c = cluster.servers.find((s) => s !== a && s !== b)!;

  const paused = await client(a!).request('/$import', { method: 'POST', json: { id: 'act', action: 'pause' } });
  expect(paused.status).toBe(200);
  expect(((await paused.json()) as any).status).toBe('paused');
  const atPause = await batches();
  const bAtPause = await batches(bOwner);

  // every server hands its inputs back well within a heartbeat (10 s), the waiting one included
  const deadline = Date.now() + 8000;
  let owned = -1;
  while (Date.now() < deadline) {
    const [row] = await cluster.sql`select count(*)::int as n from fhirhose_job where grp = 'act' and owner is not null`;
    owned = row!.n as number;
    if (owned === 0) break;
    await Bun.sleep(50);
  }
  expect(owned).toBe(0);
  expect(await batches()).toBe(atPause);
  expect(await batches(bOwner)).toBe(bAtPause);
  const status = await waitFor(client(b), 'act', (s) => s.status === 'paused');
  expect(status.inputs.every((i: any) => i.status === 'paused' && i.owner === undefined)).toBe(true);

  const resumed = await client(c).request('/$import', { method: 'POST', json: { id: 'act', action: 'resume' } });
  expect(resumed.status).toBe(200);
  expect(((await resumed.json()) as any).status).toBe('active');
  sources.release(`/in${HELD}.ndjson`);

  // SIGTERM: the server stops at a batch boundary and hands its inputs back (no owner: claimable
  // at once, not after the 30 s lease); the others take them when they have room
  const again = await waitFor(client(c), 'act', (s) => s.inputs.some((i: any) => i.owner && i.status === 'active' && i.checkpoint < LINES - 2000), 60_000);
  const leaving = again.inputs.find((i: any) => i.owner && i.status === 'active' && i.checkpoint < LINES - 2000).owner as string;
  const stopping = cluster.servers.find((s) => s.output().includes(`job runner ${leaving}:`))!;
  const left = (await cluster.sql`select key, epoch::int as epoch from fhirhose_job where owner = ${leaving}`).map((r) => ({ key: r.key as string, epoch: r.epoch as number }));
  expect(left.length).toBeGreaterThan(0);
  stopping.proc.kill('SIGTERM');
  expect(await stopping.proc.exited).toBe(0);
  expect(stopping.output()).toMatch(/import act: stopping with the server; handed back at checkpoint [1-9]/);
  const [released] = await cluster.sql`select count(*)::int as n from fhirhose_job where owner = ${leaving}`;
  expect(released!.n).toBe(0);
  const stillRunning = cluster.servers.find((s) => s !== stopping && s.proc.exitCode === null)!;

  const done = await waitFor(client(stillRunning), 'act', (s) => s.status !== 'active', 90_000);
  expect(done.status).toBe('done');
  expect(await batches()).toBeGreaterThan(atPause);
  // what the stopped server handed back was claimed (by the others) and finished
  for (const { key, epoch } of left) {
    const [claim] = await cluster.sql`select owner from audit_claim where key = ${key} and epoch > ${epoch} order by n limit 1`;
    expect(claim?.owner).toBeString();
    expect(claim!.owner).not.toBe(leaving);
  }
  await expectFencedBatches(cluster.sql, 'act');
  await expectExactImport(cluster.sql, 'act');
}, 150_000);
