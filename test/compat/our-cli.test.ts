/**
 * Issue 17: our own CLI works against a master with `compatibility = original` (it signs every request, so
 * the master answers it in SPEC §2.1's vocabulary whatever the mode). A real `clusterrunner build` process.
 */
import { afterEach, expect, it } from 'vitest';
import { cleanupAll, spawnCli, startTestMaster, startTestWorker } from '../support/cluster.ts';
import { clientSetup, projectWith } from '../cli/helpers.ts';

afterEach(cleanupAll);

it('clusterrunner build finishes a passing build (exit 0) and a failing one (exit 1) under compatibility = original', async () => {
  const master = await startTestMaster({ conf: { compatibility: 'original' } });
  await startTestWorker(master, { executors: 2 });
  const client = clientSetup(master.secret);
  const run = async (command: string) => {
    const project = projectWith(`Job:\n  commands:\n    - ${command}\n  atomizers:\n    - X: seq 1 3\n`);
    const build = spawnCli(['build', '-c', client.conf, '--master-url', master.url, 'directory', '--project-directory', project], { cwd: client.dir, env: client.env });
    return { code: await build.exited, output: build.output() };
  };
  const passing = await run('echo "atom $X"');
  expect(passing.code, passing.output).toBe(0);
  expect(passing.output).toMatch(/build \d+: SUCCESS/);
  const failing = await run('test "$X" != 2');
  expect(failing.code, failing.output).toBe(1);
  expect(failing.output).toMatch(/build \d+: FAILURE/);
});
