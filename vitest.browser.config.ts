import { defineConfig } from 'vitest/config';

/**
 * The dashboard's browser tests (npm run test:browser): real Chromium driven by playwright-core against a
 * real master and worker. Kept out of `npm test` so a machine with only Node and git can run that.
 */
export default defineConfig({
  test: {
    include: ['test/browser/**/*.browser.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // One browser and one cluster at a time: the machine has two cores.
    maxWorkers: 1,
    fileParallelism: false,
    retry: 1,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
