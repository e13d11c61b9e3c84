/**
 * The operator console (SPEC §14) in a real headless Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core; `.ci/run` installs it): imports started from the page and followed live over
 * SSE to done with the right counts, pause/resume and abort from the page, a bad line's error with
 * its line number, a $dump-sql preview, and user data holding markup shown as text. A screenshot
 * of each state goes to tests/artifacts/console/ (git-ignored).
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROOT_SECRET, startTestServer, type TestServer } from '../../helpers/server.ts';
import { startSourceServer, type SourceServer } from '../../helpers/import-sources.ts';

const DIR = path.join(import.meta.dir, '../../fixtures/synthea/two-patients');
const ARTIFACTS = path.join(import.meta.dir, '../../artifacts/console');
const XSS = '<script>window.__xss=1</script>';

let server: TestServer;
let sources: SourceServer;
let browser: Browser;
let page: Page;
const problems: string[] = [];
const dialogs: string[] = [];

beforeAll(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  server = await startTestServer({ FHIRHOSE_IMPORT_BATCH_LINES: '5' });
  sources = startSourceServer();
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-background-networking'] });
  const context = await browser.newContext({ httpCredentials: { username: 'root', password: ROOT_SECRET }, viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => { dialogs.push(d.message()); void d.dismiss(); });
}, 90_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await sources?.stop();
});

const session = (id: string) => page.locator(`#jobs .job[data-key="import:${id}"]`);

async function startFromPage(id: string, urls: string[]): Promise<void> {
  await page.fill('#start-id', id);
  await page.fill('#start-urls', urls.join('\n'));
  await page.click('#start button[type=submit]');
  await page.waitForFunction((sid) => document.querySelector('#start-msg')?.textContent?.includes(`session ${sid} is`), id, { timeout: 10_000 });
}

async function act(id: string, action: string, expected: string): Promise<string> {
  const button = session(id).locator(`button[data-action="${action}"]`);
  await button.click();
  await page.waitForFunction(([sid, a]) => document.querySelector(`#jobs .job[data-key="import:${sid}"] .answer`)?.textContent?.includes(`Press ${a} again`), [id, action], { timeout: 5_000 });
  await button.click();
  await page.waitForFunction(([sid, text]) => document.querySelector(`#jobs .job[data-key="import:${sid}"] .answer`)?.textContent?.includes(text!), [id, expected], { timeout: 10_000 });
  return (await session(id).locator('.answer').textContent()) ?? '';
}

async function statusIs(id: string, status: string, timeout = 30_000): Promise<void> {
  try {
    await page.waitForSelector(`#jobs .job[data-key="import:${id}"][data-status="${status}"]`, { timeout });
  } catch (error) {
    const api = await (await server.request(`/BulkImportStatus/${id}`)).text();
    const shown = await page.evaluate((key) => ({ live: document.querySelector('#live')?.textContent, card: [...document.querySelectorAll('#jobs .job')].find((c) => (c as HTMLElement).dataset.key === key)?.textContent ?? 'no card' }), `import:${id}`);
    throw new Error(`session ${id} not shown ${status}: ${(error as Error).message}\nAPI: ${api.slice(0, 1500)}\npage: ${JSON.stringify(shown).slice(0, 1500)}\npage problems: ${problems.join('; ')}`);
  }
}

test('the console follows imports live, steers them, shows errors and SQL as text, at 1280 and 400 px', async () => {
  const files = fs.readdirSync(DIR).filter((f) => f.endsWith('.ndjson')).sort();
  let total = 0;
  for (const f of files) {
    const text = fs.readFileSync(path.join(DIR, f));
    total += text.toString().split('\n').filter((l) => l.trim()).length;
    sources.set(`/s/${f}`, text);
  }
  const patient = fs.readFileSync(path.join(DIR, 'Patient.000.ndjson'), 'utf8').split('\n').filter(Boolean)[0]!;
  // a slow source: many small batches, held after its first part until released
  const many = Array.from({ length: 200 }, (_, i) => JSON.stringify({ resourceType: 'Basic', id: `b${i}`, code: { text: 'x' } })).join('\n') + '\n';
  sources.set('/slow.ndjson', many, { holdAfter: 2000 });
  sources.set('/doomed.ndjson', many, { holdAfter: 2000 });
  sources.set('/bad.ndjson', `${patient}\n${JSON.stringify({ resourceType: 'Basic', id: 'ok1', code: { text: 'x' } })}\n{"resourceType": "Basic", "id": "${XSS}"}\n`);

  await page.goto(`${server.url}/console`);
  await page.waitForFunction(() => document.querySelector('#live')?.textContent === 'live', undefined, { timeout: 10_000 });

  // 1. an import of the 13 Synthea files, followed to done over SSE
  await startFromPage('synthea', files.map((f) => sources.url(`/s/${f}`)));
  await page.screenshot({ path: path.join(ARTIFACTS, '1-started.png'), fullPage: true });
  await statusIs('synthea', 'done');
  const stats = await session('synthea').locator('.stats').textContent();
  expect(stats).toContain(`100% · ${total} imported · 0 errors`);
  expect(await session('synthea').locator('tbody tr').count()).toBe(13);
  await page.screenshot({ path: path.join(ARTIFACTS, '2-done.png'), fullPage: true });

  // 2. pause and resume from the page, each confirmed and answered with the API's message
  await startFromPage('slow', [sources.url('/slow.ndjson')]);
  await statusIs('slow', 'active');
  expect(await act('slow', 'pause', 'is paused')).toBe('200: session slow is paused');
  await statusIs('slow', 'paused');
  await page.screenshot({ path: path.join(ARTIFACTS, '3-paused.png'), fullPage: true });
  expect(await act('slow', 'pause', '406')).toMatch(/^406: /); // the API's own refusal, shown as is
  expect(await act('slow', 'resume', 'is active')).toBe('200: session slow is active');
  sources.release('/slow.ndjson');
  await statusIs('slow', 'done');
  expect(await session('slow').locator('.stats').textContent()).toContain('200 imported');

  // 3. abort one
  await startFromPage('doomed', [sources.url('/doomed.ndjson')]);
  await statusIs('doomed', 'active');
  expect(await act('doomed', 'abort', 'is aborted')).toBe('200: session doomed is aborted');
  await statusIs('doomed', 'aborted');
  await page.screenshot({ path: path.join(ARTIFACTS, '4-aborted.png'), fullPage: true });
  sources.release('/doomed.ndjson');

  // 4. a bad line holding markup: its error with its line number, as text
  await startFromPage('bad', [sources.url('/bad.ndjson')]);
  await statusIs('bad', 'done');
  const errors = (await session('bad').locator('tbody tr td:last-child').textContent()) ?? '';
  expect(errors).toStartWith('line 3: ');
  expect(errors).toContain('<script>');
  expect(await page.locator('#jobs script').count()).toBe(0);
  await page.screenshot({ path: path.join(ARTIFACTS, '5-bad-line.png'), fullPage: true });

  // 5. the state filter: a link per state, followed with the keyboard
  await page.locator('#states a', { hasText: 'aborted' }).focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(/state=aborted/);
  expect(await page.locator('#jobs .job').evaluateAll((cards) => cards.map((c) => (c as HTMLElement).dataset.key))).toEqual(['import:doomed']);
  expect(await page.locator('#summary').textContent()).toBe('1 job aborted · page 1 of 1');
  await page.goto(`${server.url}/console`);
  await page.waitForFunction(() => document.querySelector('#live')?.textContent === 'live', undefined, { timeout: 10_000 });

  // 6. $dump-sql preview, markup in a value shown as text, three download links
  await page.fill('#sql-query', `select '<img src=x onerror="window.__xss=2">' as html, count(*)::int as n from patient`);
  await page.click('#sql button[type=submit]');
  await page.waitForSelector('#downloads a:nth-child(3)', { timeout: 15_000 });
  expect(await page.locator('#preview td').first().textContent()).toBe('<img src=x onerror="window.__xss=2">');
  expect(await page.locator('#preview td').nth(1).textContent()).toBe('2');
  expect(await page.locator('#preview img').count()).toBe(0);
  expect(await page.locator('#downloads a').allTextContents()).toEqual(['Download TSV', 'Download CSV', 'Download ndjson']);
  await page.screenshot({ path: path.join(ARTIFACTS, '6-dump-sql.png'), fullPage: true });

  // 8. 400 px wide: nothing wider than the window
  await page.setViewportSize({ width: 400, height: 900 });
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(400);
  await page.screenshot({ path: path.join(ARTIFACTS, '7-narrow.png'), fullPage: true });

  expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
  expect(dialogs).toEqual([]);
  // Chromium logs every non-2xx fetch as a console error: the one 406 is the refusal asked for above
  expect(problems.filter((p) => !p.includes('status of 406'))).toEqual([]);
  expect(problems.filter((p) => p.includes('status of 406'))).toHaveLength(1);
}, 120_000);

test('the console and its event stream need credentials', async () => {
  for (const p of ['/console', '/console/events', '/console/app.js']) {
    const res = await fetch(server.url + p);
    expect({ p, status: res.status, auth: res.headers.get('www-authenticate') }).toEqual({ p, status: 401, auth: 'Basic realm="fhirhose"' });
  }
});
