import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/cluster.ts';
import { launchBrowser } from './browser.ts';

afterAll(cleanupAll);

describe('without Chromium', () => {
  it('fails saying what is missing and how to install it, rather than skipping', async () => {
    await expect(launchBrowser('/nonexistent/chromium')).rejects.toThrow(/Chromium is missing at \/nonexistent\/chromium.*apt-get install -y chromium/);
  });
});
