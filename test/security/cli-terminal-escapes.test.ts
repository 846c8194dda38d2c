/**
 * Issue 10 item 11: build output, atom strings, job names and error messages are written by the build's
 * code; the CLI must not pass their control characters to the user's terminal (a test cleared the screen
 * and printed a fake "SUCCESS"). Every command that prints build text is checked against a real master.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { runCli } from '../support/build-results.ts';
import { clientSetup, projectWith } from '../cli/helpers.ts';

afterEach(cleanupAll);

// ESC (screen clear, cursor home, window title), BEL, backspace, carriage return, a C1 CSI and a
// right-to-left override.
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

describe('control characters from a build', () => {
  it('are neutralised in build, status, logs and list output', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const client = clientSetup(master.secret, { master_url: master.url });
    const project = projectWith(`
Evil:
  commands:
    - |-
      printf '\\033[2J\\033[H\\033]0;pwned\\007build 1: SUCCESS\\r\\010\\302\\233\\342\\200\\256\\n'
    - exit 1
  atomizers:
    - N: printf 'a\\033[2Jb\\n'
`);
    const work = tempDir('cr-sec-work-');
    const build = await runCli(['build', '-c', client.conf, '-m', master.url, 'directory', '--project-directory', project], { cwd: work, env: client.env, timeoutMs: 120_000 });
    expect(build.code, build.stdout + build.stderr).toBe(1);
    expect(build.stdout).toContain('\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07build 1: SUCCESS\\x0d\\x08');
    expect(build.stdout).toContain('export N="a\\x1b[2Jb";');

    const ids = (await fetch(`${master.url}/v1/build`).then((response) => response.json()) as { builds: { id: number }[] }).builds.map((b) => b.id);
    const errored = await postBuild(master, { type: 'directory', project_directory: projectWith('Evil:\n  commands: ["true"]\n  atomizers:\n    - N: printf "\\033[31mred\\n" >&2; exit 1\n') });
    expect((await waitForBuild(master, errored, undefined, 120_000)).status).toBe('ERROR');

    const runs = [
      build,
      await runCli(['status', String(ids[0]), '-c', client.conf], { env: client.env, timeoutMs: 120_000 }),
      await runCli(['status', String(errored), '-c', client.conf], { env: client.env, timeoutMs: 120_000 }),
      await runCli(['logs', String(ids[0]), '-c', client.conf], { env: client.env, timeoutMs: 120_000 }),
      await runCli(['logs', String(ids[0]), '--atom', '0/0', '-c', client.conf], { env: client.env, timeoutMs: 120_000 }),
      await runCli(['list', '-c', client.conf], { env: client.env, timeoutMs: 120_000 }),
    ];
    for (const run of runs) {
      expect(CONTROLS.test(run.stdout), run.stdout).toBe(false);
      expect(CONTROLS.test(run.stderr), run.stderr).toBe(false);
    }
    expect(runs[2]!.stdout).toContain('\\x1b[31mred');
  }, 600_000);
});
