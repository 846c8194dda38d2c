import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { launchBrowser, watchPage } from './browser.ts';

/** Set to a folder (e.g. docs) to save screenshots of the three pages there. */
const SCREENSHOTS = process.env['DASHBOARD_SCREENSHOTS'];

let master: TestMaster;
let browser: BrowserContext;
let page: Page;
let watch: { problems: string[] };

beforeAll(async () => {
  browser = await launchBrowser();
  master = await startTestMaster();
  await startTestWorker(master, { executors: 2, name: 'worker-one' });
});

afterAll(async () => {
  await browser?.close();
  await cleanupAll();
});

afterEach(async () => {
  // Every page of every test: no console errors, no exceptions, nothing fetched from another origin.
  expect(watch.problems).toEqual([]);
  await page.close();
});

async function openPage(path = ''): Promise<Page> {
  page = await browser.newPage();
  watch = watchPage(page, new URL(master.url).origin);
  await page.goto(`${master.url}/ui/${path}`);
  return page;
}

const directory = (config: Record<string, unknown>) => ({ type: 'directory', project_directory: tempDir(), config });

async function signIn(p: Page): Promise<void> {
  await p.getByLabel('Secret').fill(master.secret);
  await p.getByRole('button', { name: 'Sign in' }).click();
  await p.getByRole('button', { name: 'Sign out' }).waitFor();
}

describe('the dashboard in Chromium', () => {
  it('updates the builds list without a reload as a build starts and ends, and search narrows it', async () => {
    const p = await openPage();
    await p.locator('#no-builds, #builds').first().waitFor();
    const id = await postBuild(master, directory({ commands: ['sleep 1.5; echo done $X'], atomizers: [{ X: 'seq 1 2' }] }));
    const row = p.locator(`tr[data-build-id="${id}"]`);
    await expect.poll(() => row.locator('.build-status').textContent(), { timeout: 20_000 }).toMatch(/QUEUED|PREPARING|BUILDING/);
    await expect.poll(() => row.locator('.build-status').textContent(), { timeout: 30_000 }).toBe('SUCCESS');

    const other = await postBuild(master, directory({ commands: ['true'], atomizers: [{ X: 'echo 1' }] }));
    await waitForBuild(master, other);
    await expect.poll(() => p.locator('#builds tbody tr').count(), { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
    await p.getByLabel('Search builds').fill(`id:${id}`);
    await p.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => p.locator('#builds tbody tr').count(), { timeout: 10_000 }).toBe(1);
    await p.getByLabel('Search builds').fill(`-id:${id} done`);
    await p.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => p.locator(`#builds tr[data-build-id="${id}"]`).count(), { timeout: 10_000 }).toBe(0);
    expect(await p.locator(`#builds tr[data-build-id="${other}"]`).count()).toBe(1);
    if (SCREENSHOTS) {
      await p.getByLabel('Search builds').fill('');
      await p.getByRole('button', { name: 'Search' }).click();
      await expect.poll(() => p.locator('#builds tbody tr').count()).toBeGreaterThanOrEqual(2);
      mkdirSync(join(PROJECT_ROOT, SCREENSHOTS), { recursive: true });
      await p.screenshot({ path: join(PROJECT_ROOT, SCREENSHOTS, 'dashboard-builds.png'), fullPage: true });
    }
  });

  it('shows a running atom\'s console growing live, then a failed build\'s failing atom output', async () => {
    const id = await postBuild(master, directory({
      commands: ['for i in $(seq 1 12); do echo "tick $i of atom $X"; sleep 0.5; done; test $X -eq 1'], atomizers: [{ X: 'seq 1 2' }],
    }));
    await waitForBuild(master, id, (b) => b.status === 'BUILDING', 20_000);
    const p = await openPage(`builds/${id}`);
    const liveConsole = p.locator('#live-console');
    await expect.poll(() => liveConsole.textContent(), { timeout: 40_000 }).toContain('tick 2 of atom');
    const early = (await liveConsole.textContent()) ?? '';
    expect(early).not.toContain('tick 12 of atom');
    await expect.poll(() => liveConsole.textContent(), { timeout: 40_000 }).toContain('tick 12 of atom 2');
    await expect.poll(() => p.locator('#build-status').textContent(), { timeout: 40_000 }).toBe('FAILURE');
    await expect.poll(() => p.locator('pre.failed-console').first().textContent(), { timeout: 10_000 }).toContain('tick 12 of atom 2');
    if (SCREENSHOTS) await p.screenshot({ path: join(PROJECT_ROOT, SCREENSHOTS, 'dashboard-build.png'), fullPage: true });
  });

  it('lets a signed-in operator cancel a running build from its page', async () => {
    const id = await postBuild(master, directory({ commands: ['sleep 30'], atomizers: [{ X: 'echo 1' }] }));
    await waitForBuild(master, id, (b) => b.status === 'BUILDING', 20_000);
    const p = await openPage(`builds/${id}`);
    await p.locator('#build-status').waitFor();
    expect(await p.locator('#cancel').count()).toBe(0); // not signed in: no cancel button
    await signIn(p);
    await p.getByRole('button', { name: 'Cancel build' }).click();
    await expect.poll(() => p.locator('#build-status').textContent(), { timeout: 20_000 }).toBe('CANCELED');
    const cookies = await browser.cookies(master.url);
    const session = cookies.find((c) => c.name === 'clusterrunner_session');
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Strict');
    expect(cookies.some((c) => c.value.includes(master.secret))).toBe(false);
  });

  it('works from the keyboard: skip link, sign-in, a running build\'s progress bar, its page and its cancel', async () => {
    const id = await postBuild(master, directory({ commands: ['sleep 30'], atomizers: [{ X: 'seq 1 3' }] }));
    await waitForBuild(master, id, (b) => b.status === 'BUILDING', 20_000);
    await browser.clearCookies(); // signed out, whatever an earlier test did
    const p = await openPage();
    const bar = p.locator(`tr[data-build-id="${id}"] progress`);
    await expect.poll(() => bar.getAttribute('aria-label'), { timeout: 20_000 }).toBe(`Build ${id}: 0 of 3 atoms done`);
    await p.keyboard.press('Tab');
    expect(await p.evaluate('document.activeElement?.textContent')).toBe('Skip to content');
    await p.getByLabel('Secret').focus();
    await p.keyboard.type(master.secret);
    await p.keyboard.press('Enter');
    await p.getByRole('button', { name: 'Sign out' }).waitFor();
    await p.locator(`a[href="/ui/builds/${id}"]`).focus();
    await p.keyboard.press('Enter');
    await p.waitForURL(`**/ui/builds/${id}`);
    const cancel = p.getByRole('button', { name: 'Cancel build' });
    await cancel.focus();
    await p.keyboard.press('Enter');
    await expect.poll(() => p.locator('#build-status').textContent(), { timeout: 20_000 }).toBe('CANCELED');
    await p.getByRole('button', { name: 'Sign out' }).click();
    await p.getByLabel('Secret').waitFor();
  });

  it('renders console lines holding markup as text', async () => {
    const payloads = ['<script>window.__xss = 1</script>', '"><img src=x onerror="window.__xss = 2">', "'><svg onload=window.__xss=3>"];
    const commands = payloads.map((text) => `printf '%s\\n' ${JSON.stringify(text).replace(/\$/g, '\\$')}`);
    const id = await postBuild(master, directory({ commands: [...commands, 'sleep 1', 'exit 1'], atomizers: [{ X: `printf '%s\\n' '<b>bold</b>'` }] }));
    const p = await openPage(`builds/${id}`);
    await waitForBuild(master, id);
    await expect.poll(() => p.locator('pre.failed-console').first().textContent(), { timeout: 20_000 }).toContain(payloads[1]);
    const text = (await p.locator('main').textContent()) ?? '';
    for (const payload of payloads) expect(text).toContain(payload);
    expect(await p.evaluate(() => (globalThis as { __xss?: number }).__xss)).toBeUndefined();
    expect(await p.locator('main img, main svg, main script, main b').count()).toBe(0);
    await expect.poll(() => p.locator('#atoms').textContent(), { timeout: 10_000 }).toContain('<b>bold</b>');
  });

  it('lists the workers', async () => {
    const p = await openPage('workers');
    await expect.poll(() => p.locator('#workers').textContent(), { timeout: 10_000 }).toContain('worker-one');
    await startTestWorker(master, { executors: 1, name: 'worker-two' });
    await expect.poll(() => p.locator('#workers').textContent(), { timeout: 10_000 }).toContain('worker-two');
    if (SCREENSHOTS) await p.screenshot({ path: join(PROJECT_ROOT, SCREENSHOTS, 'dashboard-workers.png'), fullPage: true });
  });
});
