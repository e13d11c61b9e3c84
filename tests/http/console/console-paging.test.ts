/**
 * The console's list (SPEC §14) in a real headless Chromium: 20 jobs a page, newest first, pages
 * and state filters as links reached with the keyboard; live rows only where the page can show
 * them (a new job tops page 1 and the page keeps 20; page 2 gains nothing); every control
 * reachable with Tab and visibly focused. Without a browser: bad `page`/`state` values are a 400
 * naming the value, and a client sees only its own exports.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { ROOT_SECRET, startTestServer, type TestServer } from '../../helpers/server.ts';
import { startImport, startSourceServer, waitFor, type SourceServer } from '../../helpers/import-sources.ts';
import { addClient } from '../../helpers/clients.ts';
import { kickOff, waitForManifest } from '../../helpers/export.ts';

const ARTIFACTS = path.join(import.meta.dir, '../../artifacts/console');
const id = (n: number) => `p${String(n).padStart(2, '0')}`;
const DONE = 36;
const PAUSED = 6;

let server: TestServer;
let sources: SourceServer;
let browser: Browser;
let context: BrowserContext;
const problems: string[] = [];

beforeAll(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  server = await startTestServer();
  sources = startSourceServer();
  sources.set('/one.ndjson', JSON.stringify({ resourceType: 'Basic', id: 'one', code: { text: 'x' } }) + '\n');
  const two = [1, 2].map((i) => JSON.stringify({ resourceType: 'Basic', id: `held${i}`, code: { text: 'x' } })).join('\n') + '\n';
  sources.set('/held.ndjson', two, { holdAfter: 10 });
  // one at a time: each session's start is later than the one before (the list's order)
  for (let n = 1; n <= DONE + PAUSED; n++) {
    const res = await startImport(server, { id: id(n), inputs: [{ url: sources.url(n <= DONE ? '/one.ndjson' : '/held.ndjson') }] });
    expect(res.status).toBe(201);
  }
  await Promise.all(Array.from({ length: DONE }, (_, i) => waitFor(server, id(i + 1), (s) => s.status === 'done', 240_000)));
  for (let n = DONE + 1; n <= DONE + PAUSED; n++) {
    const res = await startImport(server, { id: id(n), action: 'pause' });
    expect(res.status).toBe(200);
  }
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-background-networking'] });
  context = await browser.newContext({ httpCredentials: { username: 'root', password: ROOT_SECRET }, viewport: { width: 1280, height: 900 } });
}, 300_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await sources?.stop();
});

async function open(query = ''): Promise<Page> {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  await page.goto(`${server.url}/console${query}`);
  await page.waitForFunction(() => document.querySelector('#live')?.textContent === 'live', undefined, { timeout: 10_000 });
  return page;
}

const keys = (page: Page) => page.locator('#jobs .job').evaluateAll((cards) => cards.map((c) => (c as HTMLElement).dataset.id));
const range = (from: number, to: number) => Array.from({ length: from - to + 1 }, (_, i) => id(from - i));

/** Follows a link with the keyboard alone: Tab until it has focus, then Enter. */
async function follow(page: Page, selector: string): Promise<void> {
  const target = page.locator(selector);
  await page.locator('#jobs-title').click(); // a start point just before the list
  for (let i = 0; i < 400 && !(await target.evaluate((el) => el === document.activeElement)); i++) await page.keyboard.press('Tab');
  expect(await target.evaluate((el) => el === document.activeElement)).toBe(true);
  await page.keyboard.press('Enter');
}

test('42 sessions page as 20, 20, 2, newest first; pages and filters are links followed with the keyboard', async () => {
  const page = await open();
  expect(await keys(page)).toEqual(range(42, 23));
  expect(await page.locator('#summary').textContent()).toBe('42 jobs · page 1 of 3');
  expect(await page.locator('#pager a').allTextContents()).toEqual(['older →']);
  await page.screenshot({ path: path.join(ARTIFACTS, 'paging-1-page1.png'), fullPage: true });

  await follow(page, '#pager a[rel=next]');
  await page.waitForURL(/page=2/);
  expect(await keys(page)).toEqual(range(22, 3));
  expect(await page.locator('#pager a').allTextContents()).toEqual(['← newer', 'older →']);
  await follow(page, '#pager a[rel=next]');
  await page.waitForURL(/page=3/);
  expect(await keys(page)).toEqual(range(2, 1));
  expect(await page.locator('#summary').textContent()).toBe('42 jobs · page 3 of 3');
  expect(await page.locator('#pager a').allTextContents()).toEqual(['← newer']);
  await page.screenshot({ path: path.join(ARTIFACTS, 'paging-2-page3.png'), fullPage: true });

  await follow(page, '#states a[href$="state=paused"]');
  await page.waitForURL(/state=paused/);
  expect(await keys(page)).toEqual(range(42, 37));
  expect(await page.locator('#states a[aria-current=page]').textContent()).toBe('paused');
  expect(await page.locator('#summary').textContent()).toBe('6 jobs paused · page 1 of 1');
  expect(await page.locator('#jobs .job[data-status="paused"]').count()).toBe(6);
  await page.screenshot({ path: path.join(ARTIFACTS, 'paging-3-paused.png'), fullPage: true });
  await page.close();

  // past the last page: empty, and the pager leads back
  const past = await open('?page=9');
  expect(await keys(past)).toEqual([]);
  expect(await past.locator('#summary').textContent()).toBe('42 jobs · page 9 of 3');
  expect(await past.locator('#pager a').allTextContents()).toEqual(['← newer']);
  await past.close();
  expect(problems).toEqual([]);
}, 90_000);

test('a new session tops page 1 live (the page keeps 20) and never appears on page 2 or under a filter it does not match', async () => {
  const first = await open();
  const second = await open('?page=2');
  const paused = await open('?state=paused');
  const res = await startImport(server, { id: 'p43', inputs: [{ url: sources.url('/one.ndjson') }] });
  expect(res.status).toBe(201);
  await first.waitForSelector('#jobs .job[data-key="import:p43"][data-status="done"]', { timeout: 30_000 });
  expect(await keys(first)).toEqual(['p43', ...range(42, 24)]);
  expect(await first.locator('#summary').textContent()).toBe('43 jobs · page 1 of 3');
  // the other pages' streams heard the same notifications (p43's last one reached page 1 above);
  // a row they show still moves live: p37 is on the paused page, resumed and paused again
  expect((await startImport(server, { id: 'p37', action: 'resume' })).status).toBe(200);
  await paused.waitForSelector('#jobs .job[data-key="import:p37"][data-status="active"]', { timeout: 10_000 });
  expect((await startImport(server, { id: 'p37', action: 'pause' })).status).toBe(200);
  await paused.waitForSelector('#jobs .job[data-key="import:p37"][data-status="paused"]', { timeout: 10_000 });
  expect(await keys(second)).toEqual(range(22, 3));
  expect(await keys(paused)).toEqual(range(42, 37));
  await first.screenshot({ path: path.join(ARTIFACTS, 'paging-4-live-new.png'), fullPage: true });
  for (const p of [first, second, paused]) await p.close();
  expect(problems).toEqual([]);
}, 60_000);

test('every control is reached with Tab, shows a visible focus ring, and the page fits 400 px', async () => {
  const page = await open();
  const controls = await page.evaluate(() => [...document.querySelectorAll('a[href], button, input, textarea, select')].filter((e) => !(e as HTMLButtonElement).disabled).length);
  const reached = new Set<string>();
  let ring = true;
  for (let i = 0; i < controls + 5; i++) {
    await page.keyboard.press('Tab');
    const seen = await page.evaluate(() => {
      const e = document.activeElement as HTMLElement | null;
      if (!e || e === document.body) return undefined;
      const all = [...document.querySelectorAll('a[href], button, input, textarea, select')];
      const style = getComputedStyle(e);
      return { index: all.indexOf(e), ring: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2 };
    });
    if (!seen) continue;
    reached.add(String(seen.index));
    ring &&= seen.ring;
  }
  expect(reached.size).toBe(controls);
  expect(ring).toBe(true);
  await page.setViewportSize({ width: 400, height: 900 });
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(400);
  await page.screenshot({ path: path.join(ARTIFACTS, 'paging-5-narrow.png'), fullPage: true });
  await page.close();
  expect(problems).toEqual([]);
}, 60_000);

test('bad page and state values are a 400 naming the value; the event stream refuses malformed keys', async () => {
  const cases: [string, string][] = [
    ['/console?page=0', 'Console: page "0" must be a whole number from 1 to 100000'],
    ['/console?page=abc', 'Console: page "abc" must be a whole number from 1 to 100000'],
    ['/console?page=1e3', 'Console: page "1e3" must be a whole number from 1 to 100000'],
    ['/console?state=stuck', 'Console: state "stuck" is not one of all, active, paused, done, aborted, error'],
    ['/console?sort=id', 'Console: unknown parameter "sort" (known: page, state)'],
    ['/console/events?keys=import:a,%3Cscript%3E', 'Console events: key "<script>" is not import:<id> or export:<id>'],
  ];
  for (const [url, message] of cases) {
    const res = await server.request(url, { headers: { accept: 'application/json' } });
    const body = (await res.json()) as { issue: { diagnostics: string }[] };
    expect({ url, status: res.status, message: body.issue[0]!.diagnostics }).toEqual({ url, status: 400, message });
  }
});

test('a client sees only its own exports in the console; root sees every one', async () => {
  const policy = { engine: 'allow' };
  const alice = await addClient(server, 'alice', [policy]);
  const bob = await addClient(server, 'bob', [policy]);
  const status = await kickOff(server, '/$export?_type=Basic', { auth: alice.auth });
  await waitForManifest(server, status, { auth: alice.auth });
  const exportId = status.split('/').pop()!;
  const html = async (auth: string) => (await server.request('/console', { auth })).text();
  expect(await html(alice.auth)).toContain(`data-key="export:${exportId}"`);
  expect(await html(bob.auth)).not.toContain(`data-key="export:${exportId}"`);
  expect(await html(`Basic ${Buffer.from(`root:${ROOT_SECRET}`).toString('base64')}`)).toContain(`data-key="export:${exportId}"`);
  // and bob's event stream never carries it: asked for by key, it answers `gone`, root's `job`
  const events = async (auth: string | undefined, until: string) => {
    const res = await server.request(`/console/events?keys=export:${exportId}`, auth ? { auth } : {});
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes(until)) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    return text;
  };
  const bobs = await events(bob.auth, 'event: gone');
  expect(bobs).not.toContain('event: job');
  expect(await events(undefined, 'event: job')).toContain(`"key":"export:${exportId}"`);
});
