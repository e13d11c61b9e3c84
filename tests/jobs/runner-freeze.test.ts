/**
 * SPEC §11 fencing with real processes: a server frozen with SIGSTOP past its lease (3 s) loses its
 * inputs to the other servers; woken with SIGCONT it writes nothing more. An audit trigger records
 * the owner and epoch of every committed batch (from the `fhirhose.owner`/`fhirhose.epoch`
 * settings of the batch transaction) and shows each came from the owner of the current epoch.
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

/** Batches committed under the frozen server's claims (its owner AND the epochs it held). */
async function underClaims(owner: string, held: { key: string; epoch: number }[]): Promise<number> {
  const [row] = await cluster.sql`select count(*)::int as n from audit_batch b
    join unnest(${held.map((h) => h.key)}::text[], ${held.map((h) => h.epoch)}::int[]) as h(key, epoch)
      on h.key = 'import-input:' || b.session_id || ':' || b.idx and h.epoch = b.epoch
    where b.owner = ${owner}`;
  return row!.n as number;
}

test('a server frozen past its lease, then woken, writes nothing more: every committed batch came from the current epoch', async () => {
  const [a] = cluster.servers;
  expect((await client(a!).request('/$import', { method: 'POST', json: importRequest(sources, 'freeze') })).status).toBe(201);
  const running = await waitFor(client(a!), 'freeze', (s) => s.inputs.some((i: any) => i.owner && i.checkpoint >= 1000 && i.checkpoint < LINES / 2));
  const frozenOwner = running.inputs.find((i: any) => i.owner && i.checkpoint >= 1000).owner as string;
  const frozen = serverOf(cluster.servers, frozenOwner);
  const others = cluster.servers.filter((s) => s !== frozen);
  const held = (await cluster.sql`select key, epoch::int as epoch from fhirhose_job where owner = ${frozenOwner}`)
    .map((r) => ({ key: r.key as string, epoch: r.epoch as number }));
  expect(held.length).toBeGreaterThan(0);

  frozen.proc.kill('SIGSTOP');
  let beforeWaking: number;
  try {
    // PostgreSQL ends the frozen server's open transaction (idle in transaction for one lease);
    // after the lease, the others claim every input it held, under newer epochs
    const deadline = Date.now() + 60_000;
    for (;;) {
      const [row] = await cluster.sql`select count(*)::int as n
        from unnest(${held.map((h) => h.key)}::text[], ${held.map((h) => h.epoch)}::int[]) as h(key, epoch)
        where exists (select 1 from audit_claim c where c.key = h.key and c.epoch > h.epoch)`;
      if (row!.n === held.length) break;
      if (Date.now() > deadline) {
        const jobs = await cluster.sql`select key, state, owner, epoch, lease_until, now() as now, attempts, last_error from fhirhose_job`;
        const activity = await cluster.sql`select pid, application_name, state, wait_event_type, wait_event, left(query, 120) as query from pg_stat_activity where datname = current_database()`;
        throw new Error(`the frozen server's inputs were not taken over; jobs ${JSON.stringify(jobs)}\nactivity ${JSON.stringify(activity)}\n${others.map((s) => s.output()).join('\n')}`);
      }
      await Bun.sleep(50);
    }
    beforeWaking = await underClaims(frozenOwner, held);
    expect(beforeWaking).toBeGreaterThan(0);
  } finally {
    frozen.proc.kill('SIGCONT');
  }

  const done = await waitFor(client(others[0]!), 'freeze', (s) => s.status !== 'active', 90_000);
  expect(done.status).toBe('done');
  // the woken server noticed it lost its claims (its fence, or PostgreSQL having ended its open
  // transaction meanwhile, stopped the run), and committed nothing under them
  const woken = /import freeze: (lost to another server|failed: )/;
  const deadline = Date.now() + 20_000;
  while (!woken.test(frozen.output()) && Date.now() < deadline) await Bun.sleep(50);
  expect(frozen.output()).toMatch(woken);
  if (process.env.SHOW_LOG) console.log(frozen.output());
  expect(frozen.proc.exitCode).toBeNull();
  expect(await underClaims(frozenOwner, held)).toBe(beforeWaking);
  await expectFencedBatches(cluster.sql, 'freeze');
  await expectExactImport(cluster.sql, 'freeze');
}, 150_000);
