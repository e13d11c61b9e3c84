/**
 * SPEC §10: "`GET /Patient/<id>` still answers at once" while bulk work runs. Bulk bodies wait for
 * their turn while an interactive request is in its handler (http/priority.ts), bounded both ways;
 * and, end to end, eight `$dump`s read at full speed by real clients (curl processes) leave an
 * ordinary read answered within a bound.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { Hono } from 'hono';
import { priority } from '../../src/http/priority.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { curlDump } from '../helpers/clients.ts';
import { running } from '../operations/dump-helpers.ts';
import { within } from '../helpers/wait.ts';

/** An app whose `/slow` handler runs until `finish()`, and whose `/bulk` marks itself bulk. */
function appWith(turns = priority()) {
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => { finish = resolve; });
  const app = new Hono();
  app.use('*', turns.track);
  app.get('/slow', async (c) => { await finished; return c.text('ok'); });
  app.get('/bulk', async (c) => { turns.markBulk(c); await finished; return c.text('bulk'); });
  return { app, turns, finish };
}

/** Whether `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms); });
  const result = await Promise.race([promise.then(() => true), late]);
  clearTimeout(timer);
  return result;
}

describe('turns', () => {
  test('a bulk body waits while an interactive request is in its handler, and goes on when it ends', async () => {
    const { app, turns, finish } = appWith();
    const answer = app.request('/slow');
    await within(5_000, () => turns.interactive === 1, 'the request entering its handler');
    const turn = turns.turn();
    expect(await settlesWithin(turn, 100)).toBe(false);
    finish();
    expect(await (await answer).text()).toBe('ok');
    expect(await settlesWithin(turn, 5_000)).toBe(true);
    expect(turns.interactive).toBe(0);
  });

  test('a bulk request does not count as interactive, so bulk bodies do not wait for each other', async () => {
    const { app, turns, finish } = appWith();
    const answer = app.request('/bulk');
    await Bun.sleep(0);
    expect(turns.interactive).toBe(0);
    // nothing to wait for: a turn is only a yield to the event loop
    expect(await settlesWithin(turns.turn(), 1_000)).toBe(true);
    finish();
    expect(await (await answer).text()).toBe('bulk');
  });

  test('a request that stays in its handler holds bulk bodies back at most 1 s per chunk and stops counting after 2 s', async () => {
    const { app, turns, finish } = appWith();
    const answer = app.request('/slow');
    await within(5_000, () => turns.interactive === 1, 'the request entering its handler');
    const t0 = performance.now();
    await turns.turn();
    const paused = performance.now() - t0;
    expect(paused).toBeGreaterThanOrEqual(900);
    expect(paused).toBeLessThan(1_900);
    await turns.turn();
    // past 2 s in its handler the request no longer holds anything back: a turn is a mere yield
    const t1 = performance.now();
    await turns.turn();
    expect(performance.now() - t1).toBeLessThan(500);
    expect(turns.interactive).toBe(1);
    finish();
    await answer;
  });
});

describe('a CRUD read while eight $dumps stream at full speed', () => {
  let server: TestServer;
  const ROWS = 6_000;

  beforeAll(async () => {
    server = await startTestServer({ FHIRHOSE_BULK_CONCURRENCY: '8' });
    // ~20 MB a dump (3.3 KB a row), so each of the eight lasts while the reads are timed
    await server.sql.unsafe(`insert into patient (id, txid, status, resource)
      select 'p' || g, g, 'created', jsonb_build_object('gender', 'female', 'name', jsonb_build_array(jsonb_build_object('text', repeat(md5(g::text), 100))))
      from generate_series(1, ${ROWS}) g`);
  }, 60_000);
  afterAll(async () => { await server.stop(); }, 30_000);

  test('GET /Patient/<id> answers within 2 s (plus 10× the idle machine\'s slowest read) each time while eight curl clients read $dump after $dump; every dump is complete', async () => {
    let stop = false;
    const dumps: { status: string; lines: number }[] = [];
    // real clients in processes of their own, reading as fast as they can
    const client = async () => {
      while (!stop) {
        const { status, lines } = await curlDump(`${server.url}/Patient/$dump`);
        dumps.push({ status: String(status), lines });
      }
    };
    const clients = Array.from({ length: 8 }, client);
    const COPY = 'copy (select id, txid, ts, resource from "patient"%';
    // the same reads with nothing else of ours running: the machine's own pace, which the bound scales with
    const baseline: number[] = [];
    for (let i = 1; i <= 10; i++) {
      const t0 = performance.now();
      expect((await server.request(`/Patient/p${i}`)).status).toBe(200);
      baseline.push(performance.now() - t0);
    }
    // 2 s on a machine where a read takes milliseconds; more where the machine itself is that slow
    // (the shared 2-core machine under five test suites: baseline reads up to 0.7 s)
    const bound = 2_000 + 10 * Math.max(...baseline);
    try {
      await within(60_000, async () => (await running(server.sql, COPY)).length >= 6, 'six or more $dump COPYs running at once');
      const latencies: number[] = [];
      let copiesSeen = 0;
      for (let i = 1; i <= 15; i++) {
        const t0 = performance.now();
        const res = await server.request(`/Patient/p${i * 7}`);
        const body = (await res.json()) as { id: string };
        latencies.push(performance.now() - t0);
        expect(res.status).toBe(200);
        expect(body.id).toBe(`p${i * 7}`);
        copiesSeen = Math.max(copiesSeen, (await running(server.sql, COPY)).length);
        await Bun.sleep(50);
      }
      // the dumps were still streaming while the reads were timed
      expect(copiesSeen).toBeGreaterThanOrEqual(4);
      // 8.4 s here, and 14.8 s at p99 in the bench, before bulk bodies yielded to interactive requests (BENCHMARKS.md)
      expect(Math.max(...latencies)).toBeLessThan(bound);
    } finally {
      stop = true;
      await Promise.all(clients);
    }
    expect(dumps.length).toBeGreaterThanOrEqual(8);
    for (const d of dumps) expect(d).toEqual({ status: '200', lines: ROWS });
  }, 180_000);
});
