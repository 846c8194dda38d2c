import { appendFileSync } from 'node:fs';
import type { Reporter, TestModule } from 'vitest/node';

/**
 * Ends the run with one plain `N passed, N failed` line that CI reads. With CLUSTERRUNNER_TEST_COUNTS set
 * to a file, the run also appends `passed failed` to it, so .ci/run can sum `npm test` and the browser run.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const passedOnRetry: string[] = [];
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed' && (test.diagnostic()?.retryCount ?? 0) > 0) passedOnRetry.push(`${module.moduleId} > ${test.fullName}`);
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
      }
      // A file that failed to load has no tests but is a failure all the same.
      if (module.state() === 'failed' && [...module.children.allTests()].length === 0) failed++;
    }
    // Named, never hidden: a test that needed its retry is a flake to look into, not a silent pass.
    if (passedOnRetry.length > 0) process.stdout.write(`\npassed on a retry:\n${passedOnRetry.map((name) => `  ${name}`).join('\n')}\n`);
    process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
    const countsFile = process.env['CLUSTERRUNNER_TEST_COUNTS'];
    if (countsFile) appendFileSync(countsFile, `${passed} ${failed}\n`);
  }
}
