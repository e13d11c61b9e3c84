/** SPEC §4: GET /<Type>?_id=&_lastUpdated=&_count= with keyset `next` links. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';

interface Bundle { resourceType: string; type: string; link: { relation: string; url: string }[]; entry: { fullUrl: string; resource: { id: string; meta: { lastUpdated: string } } }[] }

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
  // 250 encounters, ts spread over 2024: e<n> updated on day n of the year
  await server.sql.unsafe(`insert into encounter (id, txid, ts, status, resource)
    select 'e' || lpad(g::text, 3, '0'), g, timestamptz '2024-01-01T00:00:00Z' + (g - 1) * interval '1 day' + interval '12 hours', 'created', '{"status": "finished"}'
    from generate_series(1, 250) g`);
  await server.sql.unsafe(`insert into encounter (id, txid, ts, status, resource) values
    ('edge-start', 900, '2024-03-05T00:00:00Z', 'created', '{}'), ('edge-end', 901, '2024-03-05T23:59:59.999999Z', 'created', '{}'),
    ('edge-next', 902, '2024-03-06T00:00:00Z', 'created', '{}')`);
});
afterAll(async () => { await server.stop(); });

async function search(query: string): Promise<Bundle> {
  const res = await server.request(`/Encounter${query}`);
  const body = await res.json();
  expect({ status: res.status, body }).toMatchObject({ status: 200 });
  return body as Bundle;
}
const ids = (b: Bundle) => b.entry.map((e) => e.resource.id);

describe('search: happy', () => {
  test('no parameters: a searchset of complete resources ordered by id, 100 per page', async () => {
    const b = await search('');
    expect(b).toMatchObject({ resourceType: 'Bundle', type: 'searchset' });
    expect(b.entry).toHaveLength(100);
    expect(ids(b)).toEqual([...ids(b)].sort());
    expect(b.entry[0]!.resource).toMatchObject({ resourceType: 'Encounter', id: 'e001', status: 'finished', meta: { versionId: '1', lastUpdated: '2024-01-01T12:00:00.000000Z' } });
    expect(b.entry[0]!.fullUrl).toBe('Encounter/e001');
  });

  test('_id takes one id or a comma list', async () => {
    expect(ids(await search('?_id=e007'))).toEqual(['e007']);
    expect(ids(await search('?_id=e009,e002,missing'))).toEqual(['e002', 'e009']);
    expect(ids(await search('?_id=missing'))).toEqual([]);
  });

  test('following `next` links with _count walks every row exactly once', async () => {
    const seen: string[] = [];
    let url: string | undefined = '/Encounter?_count=40';
    let pages = 0;
    while (url) {
      const res = await server.request(url.replace(server.url, ''));
      const b = (await res.json()) as Bundle;
      expect(b.entry.length).toBeLessThanOrEqual(40);
      seen.push(...ids(b));
      url = b.link.find((l) => l.relation === 'next')?.url;
      pages++;
    }
    expect(pages).toBe(7);
    expect(seen).toHaveLength(253);
    expect(new Set(seen).size).toBe(253);
    const [row] = await server.sql`select count(*)::int as n from encounter`;
    expect(seen.length).toBe(row!.n);
  });

  test('the last page has no next link; _count=0 returns no entries', async () => {
    expect((await search('?_count=300')).link.map((l) => l.relation)).toEqual(['self']);
    const zero = await search('?_count=0');
    expect(zero.entry).toEqual([]);
  });

  test('_lastUpdated=eq<day> covers the whole day, both ends', async () => {
    expect(ids(await search('?_lastUpdated=2024-03-05'))).toEqual(['e065', 'edge-end', 'edge-start']);
    expect(ids(await search('?_lastUpdated=eq2024-03-05'))).toEqual(['e065', 'edge-end', 'edge-start']);
  });

  test('_lastUpdated=eq<month> / eq<year> cover the month / the year', async () => {
    expect((await search('?_lastUpdated=eq2024-02&_count=1000')).entry).toHaveLength(29);
    expect((await search('?_lastUpdated=eq2024&_count=1000')).entry).toHaveLength(253);
    expect((await search('?_lastUpdated=eq2025')).entry).toHaveLength(0);
  });

  test('gt/ge/lt/le compare against the range of the given precision', async () => {
    expect(ids(await search('?_lastUpdated=gt2024-09-05&_count=1000'))).toEqual(['e250']);
    expect(ids(await search('?_lastUpdated=ge2024-09-06'))).toEqual(['e250']);
    expect(ids(await search('?_lastUpdated=lt2024-01-02'))).toEqual(['e001']);
    expect(ids(await search('?_lastUpdated=le2024-01-02'))).toEqual(['e001', 'e002']);
    expect(ids(await search('?_lastUpdated=ge2024-03-05&_lastUpdated=lt2024-03-06'))).toEqual(['e065', 'edge-end', 'edge-start']);
  });

  test('an instant is exact to its precision, with a zone or Z', async () => {
    expect(ids(await search('?_lastUpdated=2024-03-05T23:59:59.999999Z'))).toEqual(['edge-end']);
    expect(ids(await search('?_lastUpdated=eq2024-03-06T01:00:00%2B01:00'))).toEqual(['edge-next']);
    expect(ids(await search('?_lastUpdated=eq2024-03-06T01:00:00+01:00'))).toEqual(['edge-next']);
    expect(ids(await search('?_lastUpdated=eq2024-03-05T12:00Z'))).toEqual(['e065']);
  });

  test('search parameters combine with paging', async () => {
    const first = await search('?_lastUpdated=eq2024-02&_count=10');
    expect(ids(first)[0]).toBe('e032');
    const next = first.link.find((l) => l.relation === 'next')!.url;
    expect(new URL(next).searchParams.get('_lastUpdated')).toBe('eq2024-02');
    const second = (await (await server.request(next.replace(server.url, ''))).json()) as Bundle;
    expect(ids(second)[0]).toBe('e042');
  });
});

describe('search: errors', () => {
  const bad: [string, RegExp][] = [
    ['?name=John', /Search parameter "name" is not supported/],
    ['?_sort=id', /Search parameter "_sort" is not supported/],
    ['?_count=abc', /_count must be an integer/],
    ['?_count=-1', /_count must be an integer/],
    ['?_count=10001', /_count must be an integer/],
    ['?_lastUpdated=yesterday', /_lastUpdated "yesterday" is not a FHIR date/],
    ['?_lastUpdated=sa2024-01-01', /the prefix sa is not supported/],
    ['?status:text=x', /The modifier :text of token parameter "status" is not supported/],
    ['?subject=Patient/a/b', /Subject "Patient\/a\/b" is not a reference/],
    ['?_lastUpdated=2024-02-30', /is not a FHIR date/],
    ['?_lastUpdated=2024-13', /is not a FHIR date/],
    ['?_lastUpdated=2024-01-01T25:00Z', /is not a FHIR date/],
  ];
  for (const [query, message] of bad) {
    test(`${query} → 400`, async () => {
      const res = await server.request(`/Encounter${query}`);
      expect(res.status).toBe(400);
      expect((await res.json()).message).toMatch(message);
    });
  }
});
