/**
 * `clusterrunner build` names the failing tests and their messages (SPEC §15) before the failed atoms'
 * console tails: a real CLI process against a real master and worker.
 */
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, startTestMaster, startTestWorker, tempDir } from '../support/cluster.ts';
import { runCli } from '../support/build-results.ts';
import { clientSetup, projectWith } from './helpers.ts';

afterEach(cleanupAll);

const FIXTURES = fileURLToPath(new URL('../fixtures/junit/', import.meta.url));

describe('clusterrunner build and test results', () => {
  it('prints the failing and erroring tests with their messages before the failed atoms', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1 });
    const client = clientSetup(master.secret);
    const project = projectWith(`
Tests:
  commands:
    - cp "fixtures/$F" "$ARTIFACT_DIR/"
    - test "$F" != pytest.xml
  atomizers:
    - F: printf "pytest.xml\\ngo-junit-report.xml\\n"
`);
    cpSync(FIXTURES, join(project, 'fixtures'), { recursive: true });
    const run = await runCli(['build', '--master-url', master.url, '-c', client.conf, '--no-results', 'directory', '--project-directory', project],
      { cwd: tempDir('cr-cli-work-'), env: client.env, timeoutMs: 45_000 });
    expect(run.code, run.stdout + run.stderr).toBe(1);
    expect(run.stdout).toContain('failed tests: 2 failed, 1 errored (of 7; 2 skipped)');
    expect(run.stdout).toMatch(/FAILED test_sample > test_fails \(atom 0\/0\)\n {4}\| AssertionError: lists differ/);
    expect(run.stdout).toMatch(/FAILED example\.com\/calc > TestDivide \(atom 1\/0\)\n {4}\| Failed\n {4}\| calc_test\.go:21/);
    expect(run.stdout).toMatch(/ERRORED test_sample > test_errors \(atom 0\/0\)\n {4}\| failed on setup with "RuntimeError: fixture exploded"/);
    // Before the failed atom and its console tail.
    expect(run.stdout.indexOf('failed tests:')).toBeLessThan(run.stdout.indexOf('failed atom 0/0'));
  });
});
