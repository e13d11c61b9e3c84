import { afterAll, beforeAll, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { within } from '../helpers/wait.ts';

const AUTH = 'Basic ' + Buffer.from('puller:s3cret-of-the-other-server').toString('base64');

let server: TestServer;
/** Another server's finished export: manifests (one in two pages) and their files. */
let other: ReturnType<typeof Bun.serve>;
const requests: { path: string; authorization: string | null }[] = [];

const lines = (type: string, prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ resourceType: type, id: `${prefix}${i}` })).join('\n') + '\n';

beforeAll(async () => {
  server = await startTestServer();
  other = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch(req) {
      const path = new URL(req.url).pathname;
      const authorization = req.headers.get('authorization');
      requests.push({ path, authorization });
      if (req.method === 'HEAD') return new Response(null, { status: 405 });
      const base = `http://127.0.0.1:${other.port}`;
      const json = (value: unknown) => Response.json(value);
      // a protected export: the manifest and its files need the credential
      if (path.startsWith('/protected/') && authorization !== AUTH) return new Response('no', { status: 401 });
      if (path === '/protected/status/1') {
        return json({
          transactionTime: '2026-12-01T20:00:00Z', request: `${base}/$export`, requiresAccessToken: true,
          output: [{ type: 'Patient', url: `${base}/protected/files/Patient.1.ndjson`, count: 6 }],
          error: [], link: [{ relation: 'next', url: '/protected/status/1/page2' }],
        });
      }
      if (path === '/protected/status/1/page2') {
        return json({
          transactionTime: '2026-12-01T20:00:00Z', request: `${base}/$export`, requiresAccessToken: true,
          output: [{ type: 'Patient', url: '../../files/Patient.2.ndjson' }, { type: 'Observation', url: `${base}/protected/files/Observation.1.ndjson` }],
          error: [],
        });
      }
      // an open export: files on a store that refuses any Authorization header
      if (path === '/open/status') {
        return json({ transactionTime: '2026-12-01T20:00:00Z', requiresAccessToken: false, output: [{ type: 'Patient', url: `${base}/store/Patient.ndjson` }], error: [] });
      }
      if (path.startsWith('/store/') && authorization !== null) return new Response('signed URLs only', { status: 400 });
      if (path === '/deletes/status') {
        return json({ requiresAccessToken: false, output: [{ type: 'Patient', url: `${base}/store/Patient.ndjson` }], deleted: [{ type: 'Bundle', url: `${base}/store/del.ndjson` }], error: [] });
      }
      if (path === '/store/del.ndjson') {
        return new Response(['store-Patient-ndjson-0', 'store-Patient-ndjson-1'].map((id) => JSON.stringify({
          resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `${base}/fhir/Patient/${id}` } }],
        })).join('\n') + '\n');
      }
      if (path === '/not-a-manifest') return new Response('<html>hello</html>');
      const file = path.split('/').pop()!;
      const [type, part] = file.split('.');
      return new Response(lines(type!, `${path.split('/')[1]}-${type}-${part}-`, type === 'Patient' ? 6 : 3));
    },
  });
});
afterAll(async () => { other.stop(true); await server.stop(); });

const url = (path: string) => `http://127.0.0.1:${other.port}${path}`;

function pull(exportUrl: string, extra: Record<string, unknown>[] = [], exportType = 'static') {
  return {
    resourceType: 'Parameters',
    parameter: [{ name: 'exportUrl', valueUrl: exportUrl }, { name: 'exportType', valueCode: exportType }, ...extra],
  };
}

async function run(body: unknown): Promise<Record<string, any>> {
  const res = await server.request('/$import', { method: 'POST', json: body });
  expect(res.status).toBe(202);
  const path = res.headers.get('content-location')!.slice(server.url.length);
  let done: Record<string, any> | undefined;
  await within(60_000, async () => {
    const status = await server.request(path);
    if (status.status === 202) { await status.body?.cancel(); return false; }
    done = (await status.json()) as Record<string, any>;
    return true;
  }, 'the end of the pull');
  return done!;
}

test('a static manifest with a link page: every output file becomes an input, the credential goes to its origin', async () => {
  const body = await run(pull(url('/protected/status/1'), [{ name: 'fileRequestHeader', part: [{ name: 'headerName', valueString: 'Authorization' }, { name: 'headerValue', valueString: AUTH }] }]));
  expect(body.extension.status).toBe('done');
  expect(body.extension.inputs.map((i: { url: string }) => i.url)).toEqual([
    url('/protected/files/Patient.1.ndjson'), url('/protected/files/Patient.2.ndjson'), url('/protected/files/Observation.1.ndjson'),
  ]);
  expect(body.output).toEqual([{ type: 'Patient', count: 12 }, { type: 'Observation', count: 3, url: url('/protected/files/Observation.1.ndjson') }]);
  expect((await server.sql`select count(*)::int as n from patient where id like 'protected-Patient-%'`)[0]!.n).toBe(12);
  expect(JSON.stringify(body)).not.toContain(AUTH.slice(6));
});

test('a manifest with requiresAccessToken false: its files are fetched without credentials', async () => {
  const body = await run(pull(url('/open/status'), [{ name: 'storageDetail', part: [{ name: 'credentialHttpBasic', valueString: 'puller:s3cret-of-the-other-server' }] }]));
  expect(body.extension.status).toBe('done');
  expect(body.output).toEqual([{ type: 'Patient', count: 6, url: url('/store/Patient.ndjson') }]);
  expect(requests.filter((r) => r.path === '/store/Patient.ndjson').every((r) => r.authorization === null)).toBe(true);
  expect(requests.some((r) => r.path === '/open/status' && r.authorization === AUTH)).toBe(true);
});

test('a static manifest with deleted files: the deletes run after the outputs, counted in "deleted"', async () => {
  const body = await run(pull(url('/deletes/status')));
  expect(body.extension.status).toBe('done');
  expect(body.output).toEqual([{ type: 'Patient', count: 6, url: url('/store/Patient.ndjson') }]);
  expect(body.deleted).toEqual([{ type: 'Bundle', count: 2, url: url('/store/del.ndjson') }]);
  const left = await server.sql`select id from patient where id like 'store-Patient-ndjson-%' order by id`;
  expect(left.map((r) => r.id)).toEqual(['store-Patient-ndjson-2', 'store-Patient-ndjson-3', 'store-Patient-ndjson-4', 'store-Patient-ndjson-5']);
});

test('refused pulls are clear and create nothing: not a manifest, a wrong credential, inputs and exportUrl together', async () => {
  const before = (await server.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n;
  const cases: [unknown, number, string][] = [
    [pull(url('/protected/status/1'), [{ name: '_type', valueString: 'Patient' }]), 400, 'kick-off parameter'],
    [pull(url('/not-a-manifest')), 502, 'is not JSON'],
    [pull(url('/protected/status/1')), 502, 'HTTP 401'],
    [pull(url('/open/status'), [{ name: 'input', part: [{ name: 'url', valueUri: url('/x.ndjson') }] }]), 400, 'not both'],
  ];
  for (const [body, status, message] of cases) {
    const res = await server.request('/$import', { method: 'POST', json: body });
    const outcome = (await res.json()) as Record<string, any>;
    expect({ status: res.status, message: outcome.issue[0].diagnostics }).toEqual({ status, message: expect.stringContaining(message) });
  }
  expect((await server.sql`select count(*)::int as n from bulkimportstatus`)[0]!.n).toBe(before);
});
