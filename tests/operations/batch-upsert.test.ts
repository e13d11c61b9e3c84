/** SPEC §4: `PUT /` upserts an array of resources in one transaction; one bad item → 400, nothing written. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
  const seed = await server.request('/Patient/existing', { method: 'PUT', json: { name: [{ family: 'Before' }] } });
  expect(seed.status).toBe(201);
});
afterAll(async () => { await server.stop(); });

async function counts() {
  const [row] = await server.sql`select
    (select count(*) from patient)::int as patients, (select count(*) from patient_history)::int as history,
    (select count(*) from observation)::int as observations, (select resource->'name'->0->>'family' from patient where id = 'existing') as family`;
  return row;
}

describe('PUT /: happy', () => {
  test('a JSON array is upserted and answered as stored, in order, with meta from the columns', async () => {
    const res = await server.request('/', {
      method: 'PUT',
      json: [
        { resourceType: 'Patient', id: 'b1', name: [{ family: 'One' }], meta: { versionId: 'ignored', tag: [{ code: 'kept' }] } },
        { resourceType: 'Observation', id: 'b2', status: 'final', code: { text: 'x' } },
        { resourceType: 'Patient', id: 'existing', name: [{ family: 'After' }] },
      ],
    });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body.map((r: { id: string }) => r.id)).toEqual(['b1', 'b2', 'existing']);
    expect(body[0].meta.tag).toEqual([{ code: 'kept' }]);
    expect(body[0].meta.versionId).not.toBe('ignored');
    const [stored] = await server.sql`select txid::text, resource from patient where id = 'b1'`;
    expect(body[0].meta.versionId).toBe(stored!.txid);
    expect(stored!.resource).toEqual({ meta: { tag: [{ code: 'kept' }] }, name: [{ family: 'One' }] });
    expect((await counts())!.family).toBe('After');
    const [h] = await server.sql`select status from patient_history where id = 'existing'`;
    expect(h!.status).toBe('created');
  });

  test('a YAML array works the same (text/yaml, application/yaml, application/x-yaml)', async () => {
    for (const [i, type] of ['text/yaml', 'application/yaml', 'application/x-yaml'].entries()) {
      const res = await server.request('/', { method: 'PUT', body: `- resourceType: Patient\n  id: y${i}\n  active: true\n`, headers: { 'content-type': type } });
      expect(res.status).toBe(200);
      expect((await res.json())[0]).toMatchObject({ resourceType: 'Patient', id: `y${i}`, active: true });
    }
  });

  test('an empty array is a no-op', async () => {
    const before = await counts();
    const res = await server.request('/', { method: 'PUT', json: [] });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual([]);
    expect(await counts()).toEqual(before);
  });
});

describe('PUT /: errors, all or nothing', () => {
  const good = [
    { resourceType: 'Patient', id: 'n0' },
    { resourceType: 'Patient', id: 'existing', name: [{ family: 'Overwritten' }] },
  ];
  const bad: [string, unknown, RegExp][] = [
    ['not an object', 'Patient', /item 2: a resource must be a JSON object/],
    ['no resourceType', { id: 'x' }, /item 2: resourceType is required/],
    ['unknown type', { resourceType: 'Pateint', id: 'x' }, /item 2: unknown resourceType "Pateint"/],
    ['no id', { resourceType: 'Patient' }, /item 2: id is required/],
    ['invalid id', { resourceType: 'Patient', id: 'has space' }, /item 2: id "has space" is not a valid FHIR id/],
    ['duplicate', { resourceType: 'Patient', id: 'n0' }, /item 2: Patient\/n0 appears more than once/],
    ['NUL character', { resourceType: 'Patient', id: 'x', name: [{ family: 'a\u0000b' }] }, /item 2: text contains a NUL character/],
    ['bad AccessPolicy', { resourceType: 'AccessPolicy', id: 'x', engine: 'nope' }, /item 2 \(AccessPolicy\/x\): AccessPolicy.engine/],
  ];
  for (const [what, item, message] of bad) {
    test(`one bad item at index 2 (${what}) → 400 naming "item 2", nothing written`, async () => {
      const before = await counts();
      const res = await server.request('/', { method: 'PUT', json: [...good, item, { resourceType: 'Observation', id: 'n3', status: 'final', code: {} }] });
      expect(res.status).toBe(400);
      const body = await res.json();
      expect(body.message).toMatch(message);
      expect(body.issue[0].diagnostics).toBe(body.message);
      expect(await counts()).toEqual(before);
    });
  }

  test('BulkImportStatus in a batch → 405 naming the item, nothing written', async () => {
    const before = await counts();
    const res = await server.request('/', { method: 'PUT', json: [...good, { resourceType: 'BulkImportStatus', id: 's' }] });
    expect(res.status).toBe(405);
    expect((await res.json()).message).toMatch(/^item 2 \(BulkImportStatus\/s\)/);
    expect(await counts()).toEqual(before);
  });

  test('a body that is not an array → 400', async () => {
    const res = await server.request('/', { method: 'PUT', json: { resourceType: 'Patient', id: 'single' } });
    expect(res.status).toBe(400);
    expect((await res.json()).message).toContain('expects an array');
  });

  test('a failure inside the transaction after some items were written rolls all of them back', async () => {
    await server.sql.unsafe(`create function boom() returns trigger language plpgsql as $$ begin raise exception 'boom on %', new.id; end $$;
      create trigger boom before insert on observation for each row when (new.id = 'explodes') execute function boom();`);
    const before = await counts();
    const res = await server.request('/', { method: 'PUT', json: [...good, { resourceType: 'Observation', id: 'explodes', status: 'final', code: {} }] });
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(text).not.toMatch(/boom|insert|observation|at \w+ \(/i);
    expect(await counts()).toEqual(before);
  });
});
