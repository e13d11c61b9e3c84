/**
 * Sources that fail (SPEC §8): the session goes to `error` with a message naming the input;
 * force-resume retries from the checkpoint and ends with exactly the input's resources.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { freePort } from '../helpers/database.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { count, patients, startImport, startSourceServer, status, waitFor, type SourceServer } from '../helpers/import-sources.ts';

let server: TestServer;
let sources: SourceServer;

beforeAll(async () => {
  server = await startTestServer({ FHIRHOSE_IMPORT_BATCH_LINES: '100' });
  sources = startSourceServer();
});
afterAll(async () => {
  await server.stop();
  await sources.stop();
});

async function forceResume(id: string): Promise<void> {
  const res = await server.request('/$import', { method: 'POST', json: { id, action: 'force-resume' } });
  expect(res.status).toBe(200);
}

async function checksum(prefix: string): Promise<string> {
  const [row] = await server.sql`select md5(string_agg(id || resource::text, ',' order by id)) as sum from patient where id like ${prefix + '-%'}`;
  return row!.sum as string;
}

test('a connection that drops mid-way → error naming the input; fixed and force-resumed → done, exact', async () => {
  const body = patients(3000, 'drop');
  sources.set('/drop.ndjson', body, { trickle: { bytes: 32 * 1024, everyMs: 5 }, dropAfter: Math.floor(body.length * 0.6) });
  await startImport(server, { id: 'drop', inputs: [{ type: 'Patient', url: sources.url('/drop.ndjson') }] });
  const failed = await waitFor(server, 'drop', (s) => s.status !== 'active');
  expect(failed.status).toBe('error');
  expect(failed.message).toContain('inputs[0] (Patient)');
  expect(failed.message).toContain('drop.ndjson');
  expect(failed.inputs[0].status).toBe('error');
  expect(failed.inputs[0].message).toBe(failed.message);
  const checkpoint = failed.inputs[0].checkpoint;
  expect(checkpoint).toBeGreaterThan(0);
  expect(checkpoint).toBeLessThan(3000);
  expect(await count(server, 'patient')).toBe(failed.inputs[0].imported);

  sources.set('/drop.ndjson', body, { trickle: { bytes: 64 * 1024, everyMs: 1 } });
  await forceResume('drop');
  const done = await waitFor(server, 'drop', (s) => s.status !== 'active');
  expect(done.status).toBe('done');
  expect(done.message).toBeUndefined();
  expect(done.inputs[0]).toMatchObject({ status: 'done', imported: 3000, checkpoint: 3000 });
  expect(done.inputs[0].message).toBeUndefined();
  const [row] = await server.sql`select count(*)::int as n from patient where id like 'drop-%'`;
  expect(row!.n).toBe(3000);
});

test('HTTP 404 → error naming the input and the status', async () => {
  await startImport(server, { id: 'missing', inputs: [{ type: 'Patient', url: sources.url('/nowhere/Patient.ndjson') }] });
  const failed = await waitFor(server, 'missing', (s) => s.status !== 'active');
  expect(failed.status).toBe('error');
  expect(failed.message).toContain('inputs[0] (Patient)');
  expect(failed.message).toContain('Patient.ndjson');
  expect(failed.message).toContain('404');
});

test('a refused connection → error; the source appears; force-resume → done', async () => {
  const port = await freePort();
  await startImport(server, { id: 'refused', inputs: [{ type: 'Patient', url: `http://127.0.0.1:${port}/late.ndjson` }] });
  const failed = await waitFor(server, 'refused', (s) => s.status !== 'active');
  expect(failed.status).toBe('error');
  expect(failed.message).toContain('unreachable');
  const late = Bun.serve({ port, hostname: '127.0.0.1', fetch: () => new Response(patients(250, 'late')) });
  try {
    await forceResume('refused');
    expect((await waitFor(server, 'refused', (s) => s.status !== 'active')).status).toBe('done');
    const [row] = await server.sql`select count(*)::int as n from patient where id like 'late-%'`;
    expect(row!.n).toBe(250);
  } finally {
    late.stop(true);
  }
});

test('a corrupt gzip → error saying so; a good file and force-resume → done', async () => {
  const gz = Bun.gzipSync(patients(500, 'gz'));
  const corrupt = gz.slice();
  corrupt.fill(0x55, 200, 260);
  sources.set('/corrupt.ndjson.gz', corrupt);
  await startImport(server, { id: 'corrupt', contentEncoding: 'gzip', inputs: [{ type: 'Patient', url: sources.url('/corrupt.ndjson.gz') }] });
  const failed = await waitFor(server, 'corrupt', (s) => s.status !== 'active');
  expect(failed.status).toBe('error');
  expect(failed.message).toContain('corrupt.ndjson.gz');
  expect(failed.message).toMatch(/gzip/);
  sources.set('/corrupt.ndjson.gz', gz);
  await forceResume('corrupt');
  expect((await waitFor(server, 'corrupt', (s) => s.status !== 'active')).status).toBe('done');
  expect(await checksum('gz')).toBe(await expectedChecksum(patients(500, 'gz')));
});

test('one failing input of two stops the session; after the fix both end exact', async () => {
  const good = patients(1500, 'two-a');
  const bad = patients(1500, 'two-b');
  sources.set('/two-a.ndjson', good, { trickle: { bytes: 16 * 1024, everyMs: 10 } });
  sources.set('/two-b.ndjson', bad, { trickle: { bytes: 16 * 1024, everyMs: 10 }, dropAfter: 50_000 });
  await startImport(server, {
    id: 'two',
    inputs: [{ type: 'Patient', url: sources.url('/two-a.ndjson') }, { type: 'Patient', url: sources.url('/two-b.ndjson') }],
  });
  const failed = await waitFor(server, 'two', (s) => s.status !== 'active');
  expect(failed.status).toBe('error');
  expect(failed.message).toContain('inputs[1]');
  expect(failed.inputs[1].status).toBe('error');
  expect(['stopped', 'done']).toContain(failed.inputs[0].status);
  if (failed.inputs[0].status === 'stopped') expect(failed.inputs[0].message).toBe('stopped when inputs[1] failed');
  sources.set('/two-b.ndjson', bad);
  await forceResume('two');
  const done = await waitFor(server, 'two', (s) => s.status !== 'active');
  expect(done.status).toBe('done');
  expect(done.imported).toBe(3000);
  expect(await checksum('two-a')).toBe(await expectedChecksum(good));
  expect(await checksum('two-b')).toBe(await expectedChecksum(bad));
  expect((await status(server, 'two')).inputs.map((i: { imported: number }) => i.imported)).toEqual([1500, 1500]);
});

/** The checksum PostgreSQL computes for the same lines, stored as fhirhose stores them. */
async function expectedChecksum(ndjson: string): Promise<string> {
  const rows = ndjson.trim().split('\n').map((line) => {
    const { resourceType: _t, id, ...rest } = JSON.parse(line) as Record<string, unknown>;
    return { id: id as string, json: JSON.stringify(rest) };
  });
  const [row] = await server.sql`
    select md5(string_agg(id || resource::text, ',' order by id)) as sum
    from (select unnest(${rows.map((r) => r.id)}::text[]) as id, unnest(${rows.map((r) => r.json)}::text[])::jsonb as resource) t`;
  return row!.sum as string;
}
