/**
 * A pull from another fhirhose whose download slots are all taken (SPEC §10, §13): A's one
 * download slot (FHIRHOSE_DOWNLOAD_CONCURRENCY=1) is held by a client that reads nothing, so B's
 * download of A's file gets 503 + Retry-After, more times than B tries a broken source. B takes
 * busy as "retry later", never as a failed input: once the holder leaves, B's pull ends `done`
 * with exactly A's resources.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { basic, ROOT_SECRET, startTestServer, type TestServer } from '../helpers/server.ts';
import { kickOff, waitForManifest } from '../helpers/export.ts';
import { rawGet, type RawResponse } from './dump-helpers.ts';
import { within } from '../helpers/wait.ts';
import { SOURCE_ATTEMPTS } from '../../src/streams/source.ts';
import { IMPORT_INPUT } from '../../src/storage/import-sessions.ts';

const PATIENTS = 50;
const OBSERVATIONS = 10_000;

let a: TestServer;
let b: TestServer;
const aLog: string[] = [];
let holder: RawResponse | undefined;

beforeAll(async () => {
  // A never cuts the holder itself (a long slow-reader window): only the holder's leaving frees the slot
  a = await startTestServer({ FHIRHOSE_DOWNLOAD_CONCURRENCY: '1', FHIRHOSE_SLOW_READER_WINDOW_MS: '600000' }, { log: (line) => aLog.push(line) });
  b = await startTestServer({
    FHIRHOSE_SOURCE_ALLOW: `${a.url}/`,
    FHIRHOSE_SOURCE_AUTHORIZATION: JSON.stringify({ [a.url]: basic('root', ROOT_SECRET) }),
  });
  await a.sql.unsafe(`insert into patient (id, txid, status, resource)
    select 'p' || g, g, 'created', jsonb_build_object('resourceType', 'Patient', 'id', 'p' || g, 'gender', 'female') from generate_series(1, ${PATIENTS}) g`);
  // ~32 MB of Observations that gzip to about half: more than socket buffers hold
  await a.sql.unsafe(`insert into observation (id, txid, status, resource)
    select 'o' || g, g, 'created', jsonb_build_object('resourceType', 'Observation', 'id', 'o' || g, 'status', 'final',
      'note', jsonb_build_array(jsonb_build_object('text', (select string_agg(md5(g::text || '.' || i::text), '') from generate_series(1, 100) i))))
    from generate_series(1, ${OBSERVATIONS}) g`);
}, 120_000);
afterAll(async () => {
  holder?.socket.destroy();
  await b?.stop();
  await a?.stop();
}, 30_000);

test('B\'s download refused with 503 + Retry-After by A (its download slot held) is asked again, and the pull ends done with every resource', async () => {
  // a client of A holds A's only download slot, reading nothing
  const manifest = await waitForManifest(a, await kickOff(a, '/$export?_type=Observation'), { timeoutMs: 150_000 });
  holder = await rawGet(a.url, new URL(manifest.output[0]!.url).pathname, { 'accept-encoding': 'gzip' });
  holder.socket.pause();
  expect(holder.status).toBe(200);

  const res = await b.request('/$import', {
    method: 'POST',
    json: { resourceType: 'Parameters', parameter: [{ name: 'exportUrl', valueUrl: `${a.url}/$export` }, { name: '_type', valueString: 'Patient' }] },
  });
  expect(res.status).toBe(202);
  const statusPath = res.headers.get('content-location')!.slice(b.url.length);

  // A refuses B's download (after its short queue) more times than B's attempts at a broken source ...
  const refused = () => aLog.filter((l) => l.includes('method=GET') && l.includes('$export-file') && l.includes('status=503'));
  await within(200_000, () => refused().length > SOURCE_ATTEMPTS, () => `${SOURCE_ATTEMPTS + 1} 503s from A to B's download (seen ${refused().length})`);
  // ... and B's session is still running, its input never failed: busy means "ask again later"
  const meanwhile = await b.request(statusPath);
  expect(meanwhile.status).toBe(202);
  await meanwhile.arrayBuffer();
  const inputs = await b.sql`select attempts, last_error from fhirhose_job where kind = ${IMPORT_INPUT}`;
  expect(inputs.length).toBeGreaterThan(0);
  for (const job of inputs) expect(job).toEqual({ attempts: 0, last_error: null });
  // A's ordinary clients are served meanwhile
  expect((await a.request('/Patient/p7', { signal: AbortSignal.timeout(30_000) })).status).toBe(200);

  holder.socket.destroy();
  let done: Record<string, any> | undefined;
  await within(180_000, async () => {
    const status = await b.request(statusPath);
    if (status.status === 202) { await status.arrayBuffer(); return false; }
    done = (await status.json()) as Record<string, any>;
    return true;
  }, 'the end of the pull');
  expect(done!.extension.status).toBe('done');
  expect(done!.error).toEqual([]);
  expect(done!.extension.imported).toBe(PATIENTS);
  const [row] = await b.sql`select count(*)::int as n, count(*) filter (where resource->>'gender' = 'female')::int as f from patient`;
  expect(row).toEqual({ n: PATIENTS, f: PATIENTS });
}, 360_000);
