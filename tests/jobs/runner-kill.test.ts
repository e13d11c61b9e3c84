/**
 * SPEC §11 with real processes: three fhirhose servers on one PostgreSQL share a session of six
 * inputs of 20,000 lines. The server running inputs is killed with SIGKILL mid-batch; once its
 * leases (3 s) end the others claim its inputs and finish them from the checkpoints, and the
 * tables hold exactly the sources: each id's content is its last line, checkpoints equal line
 * counts, no history.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import type { SourceServer } from '../helpers/import-sources.ts';
import {
  INPUTS, LINES, client, expectExactImport, expectFencedBatches, importRequest, inputBody, serverOf, startTricklingCluster, waitFor, type Cluster,
} from '../helpers/cluster.ts';

let sources: SourceServer;
let cluster: Cluster;

beforeAll(async () => {
  ({ sources, cluster } = await startTricklingCluster());
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  await sources.stop();
}, 30_000);

test('a server killed with SIGKILL mid-batch loses nothing: the others take its inputs over after the lease and finish them exactly', async () => {
  const [a] = cluster.servers;
  const res = await client(a!).request('/$import', { method: 'POST', json: importRequest(sources, 'kill') });
  expect(res.status).toBe(201);

  // wait until some server runs inputs and has committed batches of them
  const running = await waitFor(client(a!), 'kill', (s) => s.inputs.some((i: any) => i.owner && i.checkpoint >= 1000 && i.checkpoint < LINES / 2));
  const victimInput = running.inputs.find((i: any) => i.owner && i.checkpoint >= 1000);
  const victimOwner = victimInput.owner as string;
  // the status shows who runs the input and until when: renewed every second, a 3 s lease
  expect(Date.parse(victimInput.leaseUntil)).toBeGreaterThan(Date.now() - 2000);
  expect(Date.parse(victimInput.leaseUntil)).toBeLessThan(Date.now() + 4000);
  const victim = serverOf(cluster.servers, victimOwner);
  const victimInputs = (await cluster.sql`select key from fhirhose_job where owner = ${victimOwner}`).map((r) => r.key as string);
  victim.proc.kill('SIGKILL');
  await victim.proc.exited;
  const survivor = client(cluster.servers.find((s) => s !== victim)!);
  expect(victimInputs.length).toBeGreaterThan(0);
  const [committed] = await cluster.sql`select count(*)::int as n from audit_batch where owner = ${victimOwner}`;
  expect(committed!.n).toBeGreaterThan(0);

  const done = await waitFor(survivor, 'kill', (s) => s.status !== 'active', 90_000);
  expect(done.status).toBe('done');
  expect(done.imported).toBe(INPUTS * LINES);

  // every input the victim held was claimed again by another server, under a newer epoch
  for (const key of victimInputs) {
    const claims = await cluster.sql`select owner from audit_claim where key = ${key} order by n`;
    expect(claims.at(-1)!.owner).not.toBe(victimOwner);
  }
  const takers = cluster.servers.filter((s) => s !== victim).map((s) => s.output()).join('\n');
  expect(takers).toContain('import kill: resuming from its checkpoints');
  await expectExactImport(cluster.sql, 'kill');
  await expectFencedBatches(cluster.sql, 'kill');
  const [staging] = await cluster.sql`select count(*)::int as n from pg_class where relname like '\_fhirhose\_import\_%'`;
  expect(staging!.n).toBe(0);
}, 120_000);
