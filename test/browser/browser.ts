import { existsSync } from 'node:fs';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { tempDir } from '../support/cluster.ts';

/** Debian's Chromium (`apt-get install chromium`); .ci/run installs it when missing. */
export const CHROMIUM = process.env['CLUSTERRUNNER_CHROMIUM'] ?? '/usr/bin/chromium';

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/** A fresh headless Chromium profile; throws (the test fails, never skips) when Chromium is missing. */
export async function launchBrowser(executablePath = CHROMIUM): Promise<BrowserContext> {
  if (!existsSync(executablePath)) {
    throw new Error(`Chromium is missing at ${executablePath}: the dashboard's browser tests need it. Install it with \`apt-get install -y chromium\` (.ci/run does), or point CLUSTERRUNNER_CHROMIUM at a Chromium binary.`);
  }
  // launchPersistentContext passes --user-data-dir itself: a new temp folder per launch is a fresh profile.
  return await chromium.launchPersistentContext(tempDir('cr-chromium-'), {
    executablePath, headless: true, args: FLAGS, viewport: { width: 1200, height: 800 },
  });
}

/** What a page did that it must not: errors in its console, uncaught exceptions, requests to other origins. */
export function watchPage(page: Page, origin: string): { problems: string[] } {
  const problems: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()} (${message.location().url})`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.origin !== origin) problems.push(`request left the master's origin: ${request.url()}`);
  });
  return { problems };
}
