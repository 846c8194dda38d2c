/**
 * The daily commands of issue 16 (exit codes, cancel, logs --follow, and the build output in a log, on a 0-column terminal and into a closed pipe) as a user runs them: the real binary against a real master and worker on
 * loopback, each with and without --json, and the exit codes scripts rely on (0 SUCCESS, 1 FAILURE,
 * 2 ERROR/CANCELED, 3 usage or configuration, 4 master unreachable).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, eventually, postBuild, spawnCli, tempDir, waitForBuild } from '../support/cluster.ts';
import { freePort } from '../support/build-results.ts';
import { clientSetup, projectWith } from './helpers.ts';
import { closeAll, BUILD_TIMEOUT_MS, TEST_TIMEOUT_MS, runProgram, runCliSlowly, clusterWithClient, finishedBuild } from './commands-support.ts';

afterAll(closeAll);

describe('exit codes, cancel, logs --follow', () => {
  it('exit 0 for SUCCESS, 2 for ERROR, 3 for usage and configuration errors, 4 when no master answers', async () => {
    const { master, client, cli } = await clusterWithClient();
    const passed = await finishedBuild(master, 'Ok:\n  commands:\n    - "true"\n  atomizers:\n    - N: echo 1\n');
    expect((await cli(['status', String(passed.id)])).code).toBe(0);
    const broken = await finishedBuild(master, 'Broken:\n  commands:\n    - "true"\n  atomizers:\n    - N: exit 7\n');
    expect(broken.status).toBe('ERROR');
    const error = await cli(['status', String(broken.id)]);
    expect(error.code).toBe(2);
    expect(error.stdout).toContain('Atomizer command failed!');

    expect((await cli(['status', 'seven'])).code).toBe(3);
    expect((await cli(['list', '--no-such-flag'])).code).toBe(3);
    expect((await runCliSlowly(['no-such-command'], { env: client.env })).code).toBe(3);
    expect((await runCliSlowly(['--help'], { env: client.env })).stdout).toContain('3 usage or configuration error, 4 master unreachable');
    expect((await runCliSlowly(['status', '--help'], { env: client.env })).stdout).toContain('Exit codes: 0 SUCCESS, 1 FAILURE, 2 ERROR or CANCELED');

    const wrongSecret = clientSetup('not-the-masters-secret', { master_url: master.url });
    const refused = await runCliSlowly(['cancel', String(passed.id), '-c', wrongSecret.conf], { env: wrongSecret.env });
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain(`signed with the secret of ${wrongSecret.conf}`);

    const nobody = `http://127.0.0.1:${await freePort()}`;
    for (const args of [['status'], ['list'], ['workers'], ['cancel', '1'], ['status', '1', '--json']]) {
      const run = await cli([...args, '-m', nobody]);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(4);
      expect(run.stderr).toContain(`cannot reach the master at ${nobody}`);
    }
  }, TEST_TIMEOUT_MS);

  it('cancel stops a running build (CANCELED, exit 2 afterwards); logs --follow prints lines as they come until the atom ends', async () => {
    const { master, cli } = await clusterWithClient();
    const gate = join(tempDir('cr-cli-gate-'), 'go');
    const id = await postBuild(master, {
      type: 'directory',
      project_directory: projectWith(`
Slow:
  commands:
    - echo "first line of $N"
    - while [ ! -e ${gate} ]; do sleep 0.1; done
    - echo "last line of $N"
    - if [ "$N" = 2 ]; then sleep 60; fi
  atomizers:
    - N: seq 1 2
`),
    });
    await waitForBuild(master, id, (build) => build.status === 'BUILDING', BUILD_TIMEOUT_MS);
    const follow = spawnCli(['logs', String(id), '--atom', '0/0', '--follow', '-m', master.url, '-c', clientSetup(master.secret).conf]);
    await eventually('the first line to be printed', () => follow.output().includes('first line of 1'), BUILD_TIMEOUT_MS);
    expect(follow.output()).not.toContain('last line');
    writeFileSync(gate, '');
    expect(await follow.exited).toBe(0);
    expect(follow.output()).toBe('first line of 1\nlast line of 1\n');

    const cancel = await cli(['cancel', String(id)]);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(cancel.stdout).toContain(`build ${id}: cancel requested`);
    expect((await waitForBuild(master, id, undefined, BUILD_TIMEOUT_MS)).status).toBe('CANCELED');
    expect((await cli(['status', String(id)])).code).toBe(2);
    expect(JSON.parse((await cli(['cancel', String(id), '--json'])).stdout).build_id).toBe(id);
  }, TEST_TIMEOUT_MS);
});

describe('build output', () => {
  it('in a log: timestamps, each atom as it fails, a summary line with counts', async () => {
    const { master } = await clusterWithClient(2);
    const gate = join(tempDir('cr-cli-gate-'), 'go');
    const project = projectWith(`
Mixed:
  commands:
    - if [ "$N" = 1 ]; then echo "broken"; exit 3; fi
    - while [ ! -e ${gate} ]; do sleep 0.1; done
  atomizers:
    - N: seq 1 2
`);
    const run = spawnCli(['build', '-c', clientSetup(master.secret, { master_url: master.url }).conf, '-m', master.url, '--no-results', 'directory', '--project-directory', project]);
    // The second atom waits until the first one's failure has been printed.
    await eventually('the failure to be printed while the build runs', () => /\d\d:\d\d:\d\d FAILED atom 0\/0 \(exit code 3\): export N="1";/.test(run.output()), BUILD_TIMEOUT_MS);
    writeFileSync(gate, '');
    expect(await run.exited).toBe(1);
    const output = run.output();
    expect(output).toMatch(/\d\d:\d\d:\d\d build \d+: BUILDING/);
    expect(output).toMatch(/build \d+: FAILURE, 2 atoms \(1 passed, 1 failed\) in \d+s/);
    expect(output.indexOf('FAILED atom 0/0')).toBeLessThan(output.indexOf('FAILURE, 2 atoms'));
  }, TEST_TIMEOUT_MS);

  it('on a terminal that reports 0 columns: the live line still shows the build, the running atoms and the time', async () => {
    const { master, client } = await clusterWithClient(2);
    const project = projectWith('Wait:\n  commands:\n    - sleep 1.5\n  atomizers:\n    - N: seq 1 2\n');
    const command = `stty cols 0 rows 0; exec ${CLI} build -m ${master.url} -c ${client.conf} --no-results directory --project-directory ${project}`;
    const run = await runProgram('script', ['-qec', command, '/dev/null'], client.env);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    const frames = run.stdout.split('\r\x1b[2K').filter((frame) => frame.startsWith('build'));
    expect(frames.some((frame) => /^build \d+: BUILDING \d\/2 atoms done +\[[#-]{20}\] \d+s/.test(frame))).toBe(true);
    expect(frames.some((frame) => frame.includes('running 2'))).toBe(true);
    expect(run.stdout).toMatch(/build \d+: SUCCESS, 2 atoms \(2 passed, 0 failed\)/);
  }, TEST_TIMEOUT_MS);

  it('ends quietly when its reader goes away (| head -1): no EPIPE, no stack trace', async () => {
    const { master, client } = await clusterWithClient();
    const build = await finishedBuild(master, 'Loud:\n  commands:\n    - seq 1 20000\n  atomizers:\n    - N: echo 1\n');
    for (const args of [`logs ${build.id}`, 'list', `status ${build.id}`]) {
      const run = await runProgram('bash', ['-c', `set -o pipefail; ${CLI} ${args} -m ${master.url} -c ${client.conf} | head -1`], client.env);
      expect(run.stderr, args).toBe('');
      expect(run.stdout.split('\n')).toHaveLength(2);
      expect(run.status, args).toBe(0);
    }
  }, TEST_TIMEOUT_MS);

  it('says loudly that no atom ran when the atomizers print nothing (the build is still SUCCESS)', async () => {
    const { master, cli } = await clusterWithClient();
    const project = projectWith('Empty:\n  commands:\n    - "true"\n  atomizers:\n    - N: "true"\n');
    const run = await cli(['build', '--no-results', 'directory', '--project-directory', project]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/SUCCESS, 0 atoms/);
    expect(run.stderr).toContain('NO ATOM RAN');
    expect(run.stderr).toContain('allow_no_atoms: false');
    void master;
  }, TEST_TIMEOUT_MS);
});

