/**
 * Three (or N) fhirhose servers as real child processes on ONE fresh database, for the job tests
 * of SPEC §11; six ndjson inputs of 20,000 lines whose ids repeat (the last line of an id must
 * win, across batch boundaries); and audit triggers that record who committed what:
 *
 * - `audit_batch`: one row per committed import batch (a row trigger on `bulkimport_input`, which
 *   every batch updates), with the `fhirhose.owner` / `fhirhose.epoch` the runner sets in each
 *   batch transaction. A rolled-back batch leaves no row.
 * - `audit_claim`: one row per claim of a job (its epoch changed), with the claiming owner.
 */
import { expect } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { freePort, freshDatabase } from './database.ts';
import { client, spawnServer, type Child } from './child-server.ts';
import { startSourceServer, status, waitFor, type SourceServer } from './import-sources.ts';

export const INPUTS = 6;
export const LINES = 20_000;
/** Ids per input: lines past this repeat earlier ids with new content. */
export const IDS = 15_000;

export interface Cluster {
  sql: Sql;
  servers: Child[];
  stop(): Promise<void>;
}

export async function startCluster(n: number, env: Record<string, string>): Promise<Cluster> {
  const databaseUrl = await freshDatabase();
  const sql = connect(databaseUrl, { max: 3 });
  await installAudit(sql);
  const servers: Child[] = [];
  try {
    const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
    const started = await Promise.allSettled(ports.map((port) => spawnServer(databaseUrl, port, env)));
    for (const s of started) if (s.status === 'fulfilled') servers.push(s.value);
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (error) {
    await stopAll(servers);
    await sql.end();
    throw error;
  }
  return {
    sql,
    servers,
    async stop() {
      await stopAll(servers);
      await sql.end();
    },
  };
}

async function stopAll(servers: Child[]): Promise<void> {
  for (const s of servers) {
    if (s.proc.exitCode !== null || s.proc.signalCode !== null) continue;
    s.proc.kill('SIGCONT');
    s.proc.kill('SIGTERM');
  }
  await Promise.all(servers.map((s) => Promise.race([s.proc.exited, Bun.sleep(15_000).then(() => s.proc.kill('SIGKILL'))])));
}

async function installAudit(sql: Sql): Promise<void> {
  await sql.unsafe(`
    create table audit_batch (n bigserial primary key, session_id text, idx int, checkpoint bigint, owner text, epoch bigint, at timestamptz default clock_timestamp());
    create function audit_batch() returns trigger language plpgsql as $$
    begin
      if new.checkpoint <> old.checkpoint then
        insert into audit_batch (session_id, idx, checkpoint, owner, epoch)
        values (new.session_id, new.idx, new.checkpoint, current_setting('fhirhose.owner', true), nullif(current_setting('fhirhose.epoch', true), '')::bigint);
      end if;
      return null;
    end $$;
    create trigger audit_batch after update on bulkimport_input for each row execute function audit_batch();
    create table audit_claim (n bigserial primary key, key text, owner text, epoch bigint, at timestamptz default clock_timestamp());
    create function audit_claim() returns trigger language plpgsql as $$
    begin
      if new.epoch <> old.epoch and new.owner is not null then
        insert into audit_claim (key, owner, epoch) values (new.key, new.owner, new.epoch);
      end if;
      return null;
    end $$;
    create trigger audit_claim after update on fhirhose_job for each row execute function audit_claim();`);
}

/** Input `k`: LINES Patients; ids `in<k>-0 … in<k>-(IDS-1)`, the first LINES-IDS of them twice. */
export function inputBody(k: number): string {
  let out = '';
  for (let i = 0; i < LINES; i++) {
    const id = `in${k}-${i % IDS}`;
    out += JSON.stringify({ resourceType: 'Patient', id, name: [{ family: `F${k}x${i}`, given: [`line ${i + 1}`] }], active: i >= IDS }) + '\n';
  }
  return out;
}

export function importRequest(sources: SourceServer, id: string, inputs = INPUTS) {
  return { id, inputs: Array.from({ length: inputs }, (_, k) => ({ type: 'Patient', url: sources.url(`/in${k}.ndjson`) })) };
}

/**
 * Every input's ids, and each id's content, equal its source's LAST line for that id; the
 * checkpoints equal the line counts; no history (update: false).
 */
export async function expectExactImport(sql: Sql, session: string, inputs = INPUTS): Promise<void> {
  for (let k = 0; k < inputs; k++) {
    const expected = new Map<string, unknown>();
    for (const line of inputBody(k).split('\n')) {
      if (!line) continue;
      const { resourceType: _t, id, ...rest } = JSON.parse(line);
      expected.set(id, rest);
    }
    const rows = await sql`select id, resource from patient where id like ${`in${k}-%`}`;
    expect(rows.length).toBe(expected.size);
    let same = 0;
    for (const row of rows) {
      const { meta: _m, ...resource } = row.resource as Record<string, unknown>;
      if (Bun.deepEquals(resource, expected.get(row.id as string))) same++;
    }
    expect(same).toBe(expected.size);
  }
  const inputsRows = await sql`select idx, checkpoint::int as checkpoint, lines_read::int as lines, status from bulkimport_input where session_id = ${session} order by idx`;
  expect(inputsRows.map((r) => [r.checkpoint, r.lines, r.status])).toEqual(Array.from({ length: inputs }, () => [LINES, LINES, 'done']));
  const jobs = await sql`select checkpoint::int as checkpoint, state from fhirhose_job where grp = ${session} order by key`;
  expect(jobs.map((j) => [j.checkpoint, j.state])).toEqual(Array.from({ length: inputs }, () => [LINES, 'done']));
  const [history] = await sql`select count(*)::int as n from patient_history`;
  expect(history!.n).toBe(0);
}

/** Every committed batch came from the owner of the then-current epoch of its input's job. */
export async function expectFencedBatches(sql: Sql, session: string): Promise<void> {
  const claims = await sql`select key, epoch::int as epoch, owner from audit_claim`;
  const ownerOf = new Map(claims.map((c) => [`${c.key}#${c.epoch}`, c.owner as string]));
  const batches = await sql`select idx, owner, epoch::int as epoch from audit_batch where session_id = ${session} order by n`;
  expect(batches.length).toBeGreaterThan(0);
  const lastEpoch = new Map<number, number>();
  for (const b of batches) {
    expect({ idx: b.idx, epoch: b.epoch, owner: b.owner }).toEqual({ idx: b.idx, epoch: b.epoch, owner: ownerOf.get(`import-input:${session}:${b.idx}#${b.epoch}`)! });
    // commit order never goes back to an older claim: a stale server's batch would
    expect(b.epoch).toBeGreaterThanOrEqual(lastEpoch.get(b.idx) ?? 0);
    lastEpoch.set(b.idx, b.epoch);
  }
}

/** The server whose owner id is `owner` (its log's first runner line names it). */
export function serverOf(servers: Child[], owner: string): Child {
  const found = servers.find((s) => s.output().includes(`job runner ${owner}:`));
  if (!found) throw new Error(`no server runs as ${owner}`);
  return found;
}

export { client, status, waitFor };

/**
 * Three servers with a 3 s lease over six inputs trickled at 16 kB per 20 ms (~2.7 MB each: a few
 * seconds per input, so a kill or a freeze lands mid-way): the set-up of the takeover tests.
 */
export async function startTricklingCluster(): Promise<{ sources: SourceServer; cluster: Cluster }> {
  const sources = startSourceServer();
  for (let k = 0; k < INPUTS; k++) sources.set(`/in${k}.ndjson`, inputBody(k), { trickle: { bytes: 16 * 1024, everyMs: 20 } });
  const cluster = await startCluster(3, {
    FHIRHOSE_LEASE_MS: '3000', FHIRHOSE_IMPORT_BATCH_LINES: '250', FHIRHOSE_JOB_CONCURRENCY: '2', FHIRHOSE_IMPORT_CONCURRENCY: '2',
  });
  return { sources, cluster };
}
