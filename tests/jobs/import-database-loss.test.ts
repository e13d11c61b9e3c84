/**
 * `$import` when the database drops the server's connections under it (a restart, a failover, an
 * operator's pg_terminate_backend): the server process lives on, nothing is lost or doubled, the
 * session finishes (by itself, or with force-resume when it stopped in `error`), and later imports
 * work. Every connection of the server is killed at once, the import-lock one included. The
 * server is a real child process, so what it survives is what a user's would.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { freePort, freshDatabase } from '../helpers/database.ts';
import { client, spawnServer, type Child } from '../helpers/child-server.ts';
import { patients, startImport, startSourceServer, status, waitFor, type SourceServer } from '../helpers/import-sources.ts';
import { within } from '../helpers/wait.ts';

let sources: SourceServer;
let admin: Sql;
let sql: Sql;
let database: string;
let child: Child;
let server: ReturnType<typeof client>;

beforeAll(async () => {
  sources = startSourceServer();
  const url = await freshDatabase();
  database = new URL(url).pathname.slice(1);
  admin = connect(process.env.FHIRHOSE_TEST_ADMIN_URL!, { max: 1 });
  sql = connect(url, { max: 1 });
  child = await spawnServer(url, await freePort(), { FHIRHOSE_IMPORT_BATCH_LINES: '100' });
  server = client(child);
}, 90_000);
afterAll(async () => {
  if (child.proc.exitCode !== null) console.error(`the server exited with ${child.proc.exitCode}; its output:\n${child.output()}`);
  child.proc.kill('SIGTERM');
  await child.proc.exited;
  await Promise.all([admin.end(), sql.end({ timeout: 1 }), sources.stop()]);
}, 20_000);

/** Terminates every backend of the server's database (what a restart does to its connections). */
async function killConnections(): Promise<number> {
  const rows = await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${database}`;
  return rows.length;
}

/** Waits for the session to stop being active; force-resumes it once when it stopped in error. */
async function finish(id: string): Promise<Record<string, any>> {
  const ended = () => waitFor(server, id, (s) => s.status !== 'active', 60_000)
    .catch((err: Error) => { throw new Error(`${err.message}\nthe server's log:\n${child.output()}`); });
  let session = await ended();
  if (session.status === 'error') {
    expect(session.message).toContain('inputs[0] (Patient)');
    const res = await server.request('/$import', { method: 'POST', json: { id, action: 'force-resume' } });
    expect(res.status).toBe(200);
    session = await ended();
  }
  return session;
}

async function importedIds(prefix: string): Promise<{ n: number; distinct: number }> {
  const [row] = await sql`select count(*)::int as n, count(distinct id)::int as distinct from patient where id like ${prefix + '-%'}`;
  return { n: row!.n as number, distinct: row!.distinct as number };
}

/** Status reads that the kill cut off answer 500; the next ones are served again. */
async function served(id: string): Promise<Record<string, any>> {
  let session: Record<string, any> = {};
  await within(30_000, () => status(server as Parameters<typeof status>[0], id).then((s) => { session = s; return true; }, () => false), `GET /BulkImportStatus/${id} served again`);
  return session;
}

/** A trickling source that holds before its last tenth until released: the import cannot end before. */
function holdingSource(path: string, body: string): void {
  sources.set(path, body, { trickle: { bytes: 8 * 1024, everyMs: 50 }, holdAfter: Math.floor(body.length * 0.9) });
}

test('every connection killed mid-import: the server lives, the session ends with exactly the input', async () => {
  holdingSource('/kill.ndjson', patients(3000, 'kill'));
  expect((await startImport(server as Parameters<typeof startImport>[0], { id: 'kill', inputs: [{ type: 'Patient', url: sources.url('/kill.ndjson') }] })).status).toBe(201);
  const midway = await waitFor(server, 'kill', (s) => s.inputs?.[0]?.imported > 0);
  expect(midway.status).toBe('active');
  expect(midway.inputs[0].imported).toBeLessThan(3000);
  expect(await killConnections()).toBeGreaterThan(0);
  sources.release('/kill.ndjson');

  await served('kill');
  const done = await finish('kill');
  expect(child.proc.exitCode).toBeNull();
  expect(done.status).toBe('done');
  expect(done.inputs[0]).toMatchObject({ status: 'done', imported: 3000, checkpoint: 3000 });
  expect(await importedIds('kill')).toEqual({ n: 3000, distinct: 3000 });

  // the lock connection died too: the next session takes a new one
  sources.set('/after.ndjson', patients(250, 'after'));
  expect((await startImport(server as Parameters<typeof startImport>[0], { id: 'after', inputs: [{ type: 'Patient', url: sources.url('/after.ndjson') }] })).status).toBe(201);
  expect((await finish('after')).status).toBe('done');
  expect(await importedIds('after')).toEqual({ n: 250, distinct: 250 });
  expect(child.proc.exitCode).toBeNull();
}, 180_000);

test('rounds that fail on the database are tried again, less and less often, and the session goes on from its checkpoint', async () => {
  holdingSource('/again.ndjson', patients(3000, 'again'));
  expect((await startImport(server as Parameters<typeof startImport>[0], { id: 'again', inputs: [{ type: 'Patient', url: sources.url('/again.ndjson') }] })).status).toBe(201);
  await waitFor(server, 'again', (s) => s.inputs?.[0]?.imported > 0);
  // every statement on the inputs' table fails for a while: the batch, recording its failure, the next round
  await sql`alter table bulkimport_input rename to bulkimport_input_away`;
  try {
    await within(30_000, () => child.output().includes('import again: trying again in 2 s'), 'the second retry, 2 s after the first');
  } finally {
    await sql`alter table bulkimport_input_away rename to bulkimport_input`;
    sources.release('/again.ndjson');
  }
  expect(child.output()).toContain('import again: trying again in 1 s');
  expect(child.output()).toContain('import again: trying again in 2 s');

  const done = await finish('again');
  expect(done.status).toBe('done');
  expect(done.inputs[0]).toMatchObject({ status: 'done', imported: 3000, checkpoint: 3000 });
  expect(await importedIds('again')).toEqual({ n: 3000, distinct: 3000 });
  expect(child.proc.exitCode).toBeNull();
}, 180_000);
