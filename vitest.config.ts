import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real masters, workers and processes, and mostly wait on them: three files at
    // once keep two cores busy (with two, the load stayed near 2 and the run took a third longer).
    maxWorkers: 3,
    // One retry for a test that times out on a loaded machine; the summary names every test that needed it.
    retry: 1,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
