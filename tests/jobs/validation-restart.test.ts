/**
 * `$load` with `validation.enable: async` is a job (SPEC §7, §11), real processes: the server
 * validating is killed with SIGKILL mid-way; another server claims the validation after the lease
 * and finishes it from its checkpoint; the stored OperationOutcome lists exactly the invalid lines,
 * and the scratch staging table is gone.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startSourceServer, type SourceServer } from '../helpers/import-sources.ts';
import { client, startCluster, type Cluster } from '../helpers/cluster.ts';
import type { Child } from '../helpers/child-server.ts';

const LINES = 10_000;
/** Lines (1-based) whose birthDate is not a FHIR date. */
const INVALID = [7, 4_321, 8_000, 9_998];

let sources: SourceServer;
let cluster: Cluster;

function body(): string {
  let out = '';
  for (let i = 1; i <= LINES; i++) {
    const birthDate = INVALID.includes(i) ? '1st of May' : `19${String(i % 100).padStart(2, '0')}-05-01`;
    out += JSON.stringify({ resourceType: 'Patient', id: `v-${i}`, name: [{ family: `F${i}` }], birthDate }) + '\n';
  }
  return out;
}

beforeAll(async () => {
  sources = startSourceServer();
  sources.set('/patients.ndjson', body());
  cluster = await startCluster(2, { FHIRHOSE_LEASE_MS: '3000' });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  await sources.stop();
}, 30_000);

async function outcome(server: Child, id: string): Promise<Record<string, any>> {
  const res = await client(server).request(`/OperationOutcome/${id}`);
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, any>;
}

test('an async validation survives the death of the server running it: another finishes it, exact, and its table goes', async () => {
  const [a] = cluster.servers;
  const res = await client(a!).request('/Patient/$load', {
    method: 'POST',
    json: { source: sources.url('/patients.ndjson'), validation: { enable: 'async', checks: 'struct' } },
  });
  expect(res.status).toBe(200);
  const answer = (await res.json()) as Record<string, any>;
  expect(answer.total).toBe(LINES);
  const outcomeId = (answer.validation.outcome as string).split('/')[2]!;

  // the validation is claimed and under way: some pages checked, not all (the first page waits for
  // the FHIR schema to compile in that server, seconds on a busy machine)
  let job: Record<string, any> | undefined;
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    [job] = await cluster.sql`select owner, checkpoint::int as checkpoint, state, payload from fhirhose_job where kind = 'validation'`;
    if (job?.owner && job.checkpoint > 0) break;
    await Bun.sleep(10);
  }
  expect(job?.owner).toBeString();
  expect(job!.checkpoint).toBeGreaterThan(0);
  expect(job!.checkpoint).toBeLessThan(LINES);
  const table = job!.payload.table as string;
  const victim = cluster.servers.find((s) => s.output().includes(`job runner ${job!.owner}:`))!;
  victim.proc.kill('SIGKILL');
  await victim.proc.exited;
  const survivor = cluster.servers.find((s) => s !== victim)!;
  expect((await outcome(survivor, outcomeId)).issue[0].details.coding[0].code).toBe('running');

  let stored: Record<string, any> = {};
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    stored = await outcome(survivor, outcomeId);
    if (stored.issue[0].details.coding[0].code !== 'running') break;
    await Bun.sleep(50);
  }
  expect(stored.issue[0].details.coding[0].code).toBe('done');
  expect(stored.issue[0].diagnostics).toContain(`Validated ${LINES} resources`);
  expect(stored.issue[0].diagnostics).toContain(`${INVALID.length} invalid`);
  expect(stored.issue.slice(1).map((i: any) => Number(/^line (\d+):/.exec(i.diagnostics)![1]))).toEqual(INVALID);
  expect(survivor.output()).toMatch(new RegExp(`async validation ${outcomeId}: resuming after line [1-9]`));
  const [left] = await cluster.sql`select to_regclass(${table}) as t`;
  expect(left!.t).toBeNull();
  // the job is marked done just after the outcome's commit
  let done: Record<string, any> | undefined;
  for (const until = Date.now() + 10_000; Date.now() < until; await Bun.sleep(20)) {
    [done] = await cluster.sql`select state, owner from fhirhose_job where kind = 'validation'`;
    if (done?.state !== 'ready') break;
  }
  expect(done).toEqual({ state: 'done', owner: null });
  const [count] = await cluster.sql`select count(*)::int as n from patient`;
  expect(count!.n).toBe(LINES);
}, 180_000);
