/**
 * The dashboard's Retry button (issue 13, SPEC §10) in real Chromium: a signed-in operator runs the failed
 * atoms of a FAILURE build again from its page, and the same build ends SUCCESS.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { launchBrowser, watchPage } from './browser.ts';

let master: TestMaster;
let browser: BrowserContext;
let page: Page | null = null;
let watch: { problems: string[] } = { problems: [] };

beforeAll(async () => {
  browser = await launchBrowser();
  master = await startTestMaster();
  await startTestWorker(master, { executors: 2, name: 'worker-retry' });
});

afterAll(async () => {
  await browser?.close();
  await cleanupAll();
});

afterEach(async () => {
  expect(watch.problems).toEqual([]);
  await page?.close();
});

describe('the dashboard\'s Retry button', () => {
  it('lets a signed-in operator retry a failed build from its page; the same build then passes', async () => {
    const fixed = join(tempDir('cr-ui-retry-'), 'fixed');
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(),
      config: { commands: [`if [ "$X" = 2 ] && [ ! -e ${fixed} ]; then echo "broken $X"; exit 4; fi; echo "fine $X"`], atomizers: [{ X: 'seq 1 2' }] },
    });
    expect((await waitForBuild(master, id, undefined, 60_000)).status).toBe('FAILURE');

    await browser.clearCookies(); // signed out, also when vitest runs the test again
    page = await browser.newPage();
    watch = watchPage(page, new URL(master.url).origin);
    await page.goto(`${master.url}/ui/builds/${id}`);
    await page.locator('#build-status').waitFor();
    expect(await page.locator('#retry').count()).toBe(0); // not signed in: no retry button
    await page.getByLabel('Secret').fill(master.secret);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();

    writeFileSync(fixed, '');
    await page.getByRole('button', { name: 'Retry failed atoms' }).click();
    const status = page.locator('#build-status');
    await expect.poll(() => status.textContent(), { timeout: 60_000 }).toBe('SUCCESS');
    // A passed build offers no retry.
    expect(await page.locator('#retry').count()).toBe(0);
    // The failed run and the passing one are both attempts. (A loaded machine may also lose the in-process
    // worker's heartbeats while Chromium starts: such runs are attempts too, stopped as worker_lost.)
    const attempts = (await api(master, 'GET', `/v2/builds/${id}/subjobs/1/atoms/0/attempts`)).body.attempts as any[];
    expect(attempts.filter((a) => a.exit_code !== null).map((a) => a.exit_code)).toEqual([4, 0]);
    expect(attempts.every((a) => a.exit_code !== null || a.stop_reason === 'worker_lost')).toBe(true);
    const atom = (await api(master, 'GET', `/v1/build/${id}/subjob/1/atom/0`)).body.atom;
    expect(atom).toMatchObject({ attempts: attempts.length, flaky: true, exit_code: 0 });
  });
});
