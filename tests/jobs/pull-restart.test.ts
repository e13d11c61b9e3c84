/**
 * A pull survives its server (SPEC §11, §13): the importing fhirhose is a real child process,
 * SIGKILLed once while it polls the other server's export and once while it reads the files. The
 * next server polls the SAME remote export (its status URL was recorded), never kicks off a
 * second one, and finishes the files from their checkpoints with exact counts.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { client, spawnServer, type Child } from '../helpers/child-server.ts';
import { patients, startSourceServer, waitFor, type SourceServer } from '../helpers/import-sources.ts';
import { within } from '../helpers/wait.ts';

const AUTH = 'Basic ' + Buffer.from('puller:restart-secret').toString('base64');
const LINES = 6000;
const ENV = { FHIRHOSE_LEASE_MS: '3000', FHIRHOSE_IMPORT_BATCH_LINES: '250' };

let databaseUrl: string;
let sql: Sql;
let files: SourceServer;
let other: ReturnType<typeof Bun.serve>;
const children: Child[] = [];
let kickoffs = 0;
let polls = 0;
let finished = false;
let hangKickoffs = 0;
const hung: (() => void)[] = [];

beforeAll(async () => {
  databaseUrl = await freshDatabase();
  sql = connect(databaseUrl, { max: 2 });
  files = startSourceServer();
  // the second file stops half-way until released: the server is killed while it waits there
  files.set('/a.ndjson', patients(LINES, 'ra'));
  const held = patients(LINES, 'rb');
  files.set('/b.ndjson', held, { holdAfter: Math.floor(held.length / 2) });
  other = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch(req) {
      const path = new URL(req.url).pathname;
      if (req.headers.get('authorization') !== AUTH) return new Response('who are you', { status: 401 });
      if (path === '/hang/$export') {
        // takes the kick-off and answers only when released: the server dies before it hears back
        hangKickoffs++;
        return new Promise<Response>((resolve) => hung.push(() => resolve(new Response(null, { status: 202, headers: { 'content-location': `http://127.0.0.1:${other.port}/hang/status` } }))));
      }
      if (path === '/fhir/$export') {
        kickoffs++;
        return new Response(null, { status: 202, headers: { 'content-location': `http://127.0.0.1:${other.port}/fhir/status/1` } });
      }
      if (path === '/fhir/status/1' && req.method === 'GET') {
        polls++;
        if (!finished) return new Response(null, { status: 202, headers: { 'retry-after': '1', 'x-progress': `${polls}%` } });
        return Response.json({
          transactionTime: '2026-12-01T21:00:00.000Z', request: `http://127.0.0.1:${other.port}/fhir/$export`, requiresAccessToken: false,
          output: [{ type: 'Patient', url: files.url('/a.ndjson'), count: LINES }, { type: 'Patient', url: files.url('/b.ndjson'), count: LINES }],
          error: [],
        });
      }
      if (req.method === 'DELETE') return new Response(null, { status: 202 });
      return new Response('not here', { status: 404 });
    },
  });
});
afterAll(async () => {
  for (const release of hung) release();
  for (const child of children) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  other?.stop(true);
  await files?.stop();
  await sql?.end();
});

async function start(env: Record<string, string> = {}): Promise<Child> {
  const child = await spawnServer(databaseUrl, await freePort(), { ...ENV, ...env });
  children.push(child);
  return child;
}

/** POST /$import of a pull from `path` on the other server; the session id. */
async function startPull(child: Child, path: string): Promise<string> {
  const res = await client(child).request('/$import', {
    method: 'POST',
    json: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'exportUrl', valueUrl: `http://127.0.0.1:${other.port}${path}` },
        { name: 'fileRequestHeader', part: [{ name: 'headerName', valueString: 'Authorization' }, { name: 'headerValue', valueString: AUTH }] },
      ],
    },
  });
  expect(res.status).toBe(202);
  return res.headers.get('content-location')!.split('/').pop()!;
}

async function kill(child: Child): Promise<void> {
  child.proc.kill('SIGKILL');
  await child.proc.exited;
}

test('SIGKILL while polling and while reading: the next server polls the same export, one kick-off, exact counts', async () => {
  const first = await start();
  const id = await startPull(first, '/fhir/$export');
  // killed while it polls: the status URL is recorded
  await within(30_000, () => polls >= 2, 'two polls by the first server');
  const [recorded] = await sql`select state, status_url, kickoffs from bulkimport_pull where session_id = ${id}`;
  expect(recorded).toEqual({ state: 'polling', status_url: `http://127.0.0.1:${other.port}/fhir/status/1`, kickoffs: 1 });
  await kill(first);
  const pollsAtKill = polls;

  const second = await start();
  await within(30_000, () => polls > pollsAtKill, 'a poll by the next server');
  expect(kickoffs).toBe(1);
  finished = true;
  // killed while it reads: one file done or running, the other held half-way with a checkpoint
  await within(60_000, async () => {
    const [row] = await sql`select checkpoint::int as c from bulkimport_input where session_id = ${id} and url like '%/b.ndjson'`;
    return row !== undefined && row.c > 0;
  }, 'a checkpoint in the held file');
  await kill(second);
  const [held] = await sql`select checkpoint::int as c, status from bulkimport_input where session_id = ${id} and url like '%/b.ndjson'`;
  expect(held!.c).toBeLessThan(LINES);

  const third = await start();
  files.release('/b.ndjson');
  const done = await waitFor(client(third), id, (s) => s.status !== 'active', 90_000);
  expect(done.status).toBe('done');
  expect(kickoffs).toBe(1);
  expect(done.inputs.map((i: Record<string, any>) => [i.checkpoint, i.imported, i.status])).toEqual([[LINES, LINES, 'done'], [LINES, LINES, 'done']]);
  for (const prefix of ['ra', 'rb']) {
    const [row] = await sql`select count(*)::int as n, count(distinct id)::int as d from patient where id like ${prefix + '-%'}`;
    expect(row).toEqual({ n: LINES, d: LINES });
  }
  await kill(third);
}, 300_000);

test('SIGKILL between sending the kick-off and its answer: the next server fails the session instead of kicking off again', async () => {
  // the kick-off waits for its answer longer than this test runs
  const first = await start({ FHIRHOSE_SOURCE_CONNECT_TIMEOUT: '120' });
  const id = await startPull(first, '/hang/$export');
  await within(30_000, () => hangKickoffs === 1, 'the kick-off at the other server');
  expect((await sql`select state, kickoffs from bulkimport_pull where session_id = ${id}`)[0]).toEqual({ state: 'kicking-off', kickoffs: 1 });
  await kill(first);

  const next = await start();
  const failed = await waitFor(client(next), id, (s) => s.status !== 'active', 60_000);
  expect(failed.status).toBe('error');
  expect(failed.message).toContain('an export may have started there, so it is not sent again');
  expect(hangKickoffs).toBe(1);
  await kill(next);
}, 120_000);
