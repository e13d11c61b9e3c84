/**
 * The console's `$export` side (SPEC §12, §14) in a real headless Chromium: an export kicked off
 * from the page appears live and reaches done with the database's per-type counts, its files
 * download with the browser's own credentials, its manifest imports back through the import
 * form's export URL, and a cancel (DELETE) is confirmed and answered with the API's message.
 * Markup in an export's `_type` or in its ignored parameters shows as text. Keyboard only.
 * Screenshots go to tests/artifacts/console/ (git-ignored).
 */
import { afterAll, beforeAll, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROOT_SECRET, basic, startTestServer, type TestServer } from '../../helpers/server.ts';

const DIR = path.join(import.meta.dir, '../../fixtures/synthea/two-patients');
const ARTIFACTS = path.join(import.meta.dir, '../../artifacts/console');

let server: TestServer;
let browser: Browser;
let page: Page;
const problems: string[] = [];

beforeAll(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  // small files, so a type is split over several (each its own download link)
  server = await startTestServer({ FHIRHOSE_EXPORT_FILE_RESOURCES: '10' });
  for (const f of fs.readdirSync(DIR).filter((f) => f.endsWith('.ndjson'))) {
    const res = await server.request(`/${f.split('.')[0]}/$load`, { method: 'POST', body: fs.readFileSync(path.join(DIR, f)), headers: { 'content-type': 'application/fhir+ndjson' } });
    expect(res.status).toBe(200);
  }
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-background-networking'] });
  const context = await browser.newContext({ httpCredentials: { username: 'root', password: ROOT_SECRET }, viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

async function open(query = ''): Promise<void> {
  await page.goto(`${server.url}/console${query}`);
  await page.waitForFunction(() => document.querySelector('#live')?.textContent === 'live', undefined, { timeout: 10_000 });
}

async function count(type: string): Promise<number> {
  const [row] = await server.sql.unsafe(`select count(*)::int as n from ${type.toLowerCase()}`);
  return row!.n as number;
}

/** The export card's table as type → resources. */
async function typeCounts(key: string): Promise<Record<string, number>> {
  const rows = await page.locator(`#jobs .job[data-key="${key}"] tbody tr`).evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')));
  return Object.fromEntries(rows.map((r) => [r[0], Number(r[1])]));
}

/** Presses an action with the keyboard: Enter arms it, Enter again sends it; returns the answer. */
async function actByKeyboard(key: string, action: string, expected: string): Promise<string> {
  const card = `#jobs .job[data-key="${key}"]`;
  await page.locator(`${card} button[data-action="${action}"]`).focus();
  await page.keyboard.press('Enter');
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent?.includes('again to confirm'), `${card} .answer`, { timeout: 5_000 });
  await page.keyboard.press('Enter');
  await page.waitForFunction(([sel, text]) => document.querySelector(sel!)?.textContent?.includes(text!), [`${card} .answer`, expected], { timeout: 10_000 });
  return (await page.locator(`${card} .answer`).textContent()) ?? '';
}

test('an export started from the page appears live, reaches done with exact per-type counts, downloads, re-imports by its manifest URL and is cancelled', async () => {
  await open();
  expect(await page.locator('#jobs .job.export').count()).toBe(0);
  await page.fill('#export-type', 'Patient,Condition,Encounter');
  await page.locator('#export button[type=submit]').focus();
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#export-msg')?.textContent?.startsWith('202: Export started; poll '), undefined, { timeout: 10_000 });
  const statusUrl = ((await page.locator('#export-msg').textContent()) ?? '').replace('202: Export started; poll ', '');
  const id = statusUrl.split('/').pop()!;
  const key = `export:${id}`;
  // the card arrives over SSE (no reload) and is followed to done
  await page.waitForSelector(`#jobs .job[data-key="${key}"]`, { timeout: 10_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'export-1-started.png'), fullPage: true });
  await page.waitForSelector(`#jobs .job[data-key="${key}"][data-status="done"]`, { timeout: 60_000 });
  const card = page.locator(`#jobs .job[data-key="${key}"]`);
  expect(await card.locator('.status').textContent()).toBe('done');
  const expected = { Condition: await count('Condition'), Encounter: await count('Encounter'), Patient: await count('Patient') };
  expect(expected.Encounter).toBeGreaterThan(10); // split over files of 10
  expect(await typeCounts(key)).toEqual(expected);
  const total = expected.Condition + expected.Encounter + expected.Patient;
  expect(await card.locator('.stats').textContent()).toStartWith(`100% · ${total} of ${total} resources · `);
  expect(await card.locator('.detail').textContent()).toContain('_type Patient,Condition,Encounter');
  await page.screenshot({ path: path.join(ARTIFACTS, 'export-2-done.png'), fullPage: true });

  // every file is a link the browser downloads with its own Basic credentials; lines add up per type
  const links = await card.locator('tbody a[download]').evaluateAll((as) => as.map((a) => [a.closest('tr')!.querySelector('td')!.textContent, (a as HTMLAnchorElement).href]));
  expect(links.filter(([type]) => type === 'Encounter').length).toBe(Math.ceil(expected.Encounter / 10));
  const lines: Record<string, number> = {};
  for (const [type, href] of links) {
    const text = await page.evaluate(async (h) => { const r = await fetch(h!); return r.ok ? r.text() : `HTTP ${r.status}`; }, href);
    lines[type!] = (lines[type!] ?? 0) + text.split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((r) => r.resourceType === type).length;
  }
  expect(lines).toEqual(expected);

  // the import form takes that export's manifest URL (exportType static) with the credentials it needs
  await page.fill('#start-export-url', statusUrl);
  await page.selectOption('#start-export-type', 'static');
  await page.fill('#start-export-auth', basic('root', ROOT_SECRET));
  await page.click('#start button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#start-msg')?.textContent?.startsWith('202: Import started; poll '), undefined, { timeout: 15_000 });
  const sessionId = ((await page.locator('#start-msg').textContent()) ?? '').split('/').pop()!;
  await page.waitForSelector(`#jobs .job[data-key="import:${sessionId}"][data-status="done"]`, { timeout: 60_000 });
  expect(await page.locator(`#jobs .job[data-key="import:${sessionId}"] .stats`).textContent()).toStartWith(`100% · ${total} imported · 0 errors`);
  expect(await page.locator('#jobs .job').first().getAttribute('data-key')).toBe(`import:${sessionId}`); // newest first
  await page.screenshot({ path: path.join(ARTIFACTS, 'export-3-reimported.png'), fullPage: true });

  // cancel = DELETE on the status URL, confirmed, answered with the API's own message
  expect(await actByKeyboard(key, 'cancel', '202')).toBe('202: Export deleted; its files are gone');
  await page.waitForSelector(`#jobs .job[data-key="${key}"][data-status="gone"]`, { timeout: 10_000 });
  expect(await card.locator('.status').textContent()).toBe('deleted');
  expect(await card.locator('button[data-action="cancel"]').isDisabled()).toBe(true);
  expect((await server.request(new URL(statusUrl).pathname)).status).toBe(404);
  await page.screenshot({ path: path.join(ARTIFACTS, 'export-4-cancelled.png'), fullPage: true });
  expect(problems).toEqual([]);
}, 180_000);

test('markup in an export\'s _type and in its ignored parameters shows as text; a wrong Group is the API\'s 404', async () => {
  problems.length = 0;
  await open();
  await page.fill('#export-type', '<img src=x onerror=window.__xss=3>');
  await page.click('#export button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#export-msg')?.textContent?.startsWith('400: '), undefined, { timeout: 10_000 });
  expect(await page.locator('#export-msg').textContent()).toContain('<img src=x onerror=window.__xss=3>');

  // lenient: a _typeFilter naming a parameter the server does not know matches nothing and is reported on the job, as text (name= is evaluated since e58f6a7)
  await page.fill('#export-type', 'Patient');
  await page.fill('#export-type-filter', 'Patient?nosuch=<script>window.__xss=4</script>');
  await page.check('#export-lenient');
  await page.click('#export button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#export-msg')?.textContent?.startsWith('202: '), undefined, { timeout: 10_000 });
  const id = ((await page.locator('#export-msg').textContent()) ?? '').split('/').pop()!;
  await page.waitForSelector(`#jobs .job[data-key="export:${id}"][data-status="done"]`, { timeout: 60_000 });
  const message = (await page.locator(`#jobs .job[data-key="export:${id}"] .message`).textContent()) ?? '';
  expect(message).toContain('ignored: _typeFilter "Patient?nosuch=<script>window.__xss=4</script>"');
  expect(await typeCounts(`export:${id}`)).toEqual({ OperationOutcome: 0 });

  await page.selectOption('#export-level', 'group');
  await page.fill('#export-type-filter', '');
  await page.click('#export button[type=submit]');
  expect(await page.locator('#export-msg').textContent()).toBe('A Group-level export needs the Group id');
  await page.fill('#export-group', 'no-such-group');
  await page.click('#export button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#export-msg')?.textContent?.startsWith('404: '), undefined, { timeout: 10_000 });
  expect(await page.locator('#export-msg').textContent()).toBe('404: Group/no-such-group not found');
  await page.screenshot({ path: path.join(ARTIFACTS, 'export-5-xss-as-text.png'), fullPage: true });

  await page.setViewportSize({ width: 400, height: 900 });
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(400);
  await page.screenshot({ path: path.join(ARTIFACTS, 'export-6-narrow.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  expect(await page.locator('#jobs script, #jobs img, #export img').count()).toBe(0);
  expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
  // Chromium logs each non-2xx fetch as a console error: the 400 and the 404 asked for above
  expect(problems.map((p) => p.replace(/.*status of (\d+).*/, '$1')).sort()).toEqual(['400', '404']);
}, 120_000);
