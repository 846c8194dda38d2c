/**
 * `clusterrunner build --master-url` as a user runs it: a real CLI process against a real master and worker
 * (in this process) on loopback; exit codes, what it prints, and ./build_results/.
 */
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, spawnCli, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { freePort, processesWith, runCli } from '../support/build-results.ts';
import { clientSetup, projectWith } from './helpers.ts';

afterEach(cleanupAll);

const BUILD_TIMEOUT_MS = 45_000;

async function cluster(executors = 2) {
  const master = await startTestMaster();
  await startTestWorker(master, { executors });
  return master;
}

async function lastBuild(master: { url: string; secret: string }): Promise<any> {
  const builds = (await api(master, 'GET', '/v1/build')).body.builds as any[];
  return builds[builds.length - 1];
}

describe('clusterrunner build --master-url', () => {
  it('exits 0 on SUCCESS and unpacks the artifacts into ./build_results/<id>/ with a latest link, leaving older results alone', async () => {
    const master = await cluster();
    const client = clientSetup(master.secret);
    const project = projectWith(`
Hello:
  commands:
    - echo "hello $N" > "$ARTIFACT_DIR/out.txt"
  atomizers:
    - N: seq 1 3
`);
    const work = tempDir('cr-cli-work-');
    mkdirSync(join(work, 'build_results', 'artifact_9_9'), { recursive: true });
    writeFileSync(join(work, 'build_results', 'stale.txt'), 'from an older build');

    const run = await runCli(['build', '--master-url', master.url, '-c', client.conf, 'directory', '--project-directory', project],
      { cwd: work, env: client.env, timeoutMs: BUILD_TIMEOUT_MS });

    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/build \d+: SUCCESS, 3 atoms \(3 passed, 0 failed\)/);
    const build = await lastBuild(master);
    const folder = join(work, 'build_results', String(build.id));
    expect(run.stdout).toContain(folder);
    for (let subjob = 0; subjob < 3; subjob++) {
      expect(readFileSync(join(folder, `artifact_${subjob}_0`, 'out.txt'), 'utf8')).toBe(`hello ${subjob + 1}\n`);
      expect(readFileSync(join(folder, `artifact_${subjob}_0`, 'clusterrunner_exit_code'), 'utf8')).toBe('0\n');
    }
    expect(readlinkSync(join(work, 'build_results', 'latest'))).toBe(String(build.id));
    // Results of other builds (and the old layout) are not this build's to remove.
    expect(existsSync(join(work, 'build_results', 'stale.txt'))).toBe(true);
    expect(existsSync(join(work, 'build_results', 'artifact_9_9'))).toBe(true);
    expect(build.status).toBe('SUCCESS');
    expect(build.request_params.project_directory).toBe(project);
  });

  it('exits 1 on FAILURE and prints each failed atom with the tail of its console output', async () => {
    const master = await cluster();
    const client = clientSetup(master.secret);
    const project = projectWith(`
Checks:
  commands:
    - for i in $(seq 1 30); do echo "noise $i of $N"; done
    - echo "the output of atom $N"
    - test "$N" != 2
  atomizers:
    - N: seq 1 3
`);
    const work = tempDir('cr-cli-work-');
    const run = await runCli(['build', '--master-url', master.url, '-c', client.conf, 'directory', '--project-directory', project],
      { cwd: work, env: client.env, timeoutMs: BUILD_TIMEOUT_MS });

    expect(run.code, run.stdout + run.stderr).toBe(1);
    expect(run.stdout).toMatch(/build \d+: FAILURE, 3 atoms \(2 passed, 1 failed\)/);
    expect(run.stdout).toContain('export N="2";');
    expect(run.stdout).toContain('the output of atom 2');
    // The tail only: 20 of the atom's 31 lines.
    expect(run.stdout).toContain('noise 30 of 2');
    expect(run.stdout).not.toContain('noise 5 of 2');
    expect(run.stdout).not.toContain('the output of atom 1');
    expect(readFileSync(join(work, 'build_results', 'latest', 'failures.txt'), 'utf8')).toBe('artifact_1_0');
  });

  it('exits 2 on ERROR and prints the error message', async () => {
    const master = await cluster();
    const client = clientSetup(master.secret);
    const empty = tempDir('cr-cli-empty-');
    const run = await runCli(['build', '--master-url', master.url, '-c', client.conf, 'directory', '--project-directory', empty],
      { env: client.env, timeoutMs: BUILD_TIMEOUT_MS });

    expect(run.code, run.stdout + run.stderr).toBe(2);
    expect(run.stdout).toMatch(/build \d+: ERROR/);
    expect(run.stdout).toContain(`No clusterrunner.yaml found in the project folder ${empty}`);
  });

  it('builds the current folder when no sub-form is given', async () => {
    const master = await cluster();
    const client = clientSetup(master.secret);
    const project = projectWith(`
Here:
  commands:
    - pwd > "$ARTIFACT_DIR/where"
  atomizers:
    - N: echo one
`);
    const run = await runCli(['build', '--master-url', master.url, '-c', client.conf], { cwd: project, env: client.env, timeoutMs: BUILD_TIMEOUT_MS });

    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect((await lastBuild(master)).request_params).toMatchObject({ type: 'directory', project_directory: project });
    expect(existsSync(join(project, 'build_results', 'latest', 'artifact_0_0', 'where'))).toBe(true);
  });

  it('runs the job named with -j, and says which jobs there are without it', async () => {
    const master = await cluster();
    const client = clientSetup(master.secret);
    const project = projectWith(`
First:
  commands:
    - echo first > "$ARTIFACT_DIR/job"
  atomizers:
    - N: echo 1
Second:
  commands:
    - echo second > "$ARTIFACT_DIR/job"
  atomizers:
    - N: echo 1
`);
    const work = tempDir('cr-cli-work-');
    const chosen = await runCli(['build', '--master-url', master.url, '-c', client.conf, '-j', 'Second', 'directory', '--project-directory', project],
      { cwd: work, env: client.env, timeoutMs: BUILD_TIMEOUT_MS });
    expect(chosen.code, chosen.stdout + chosen.stderr).toBe(0);
    expect(readFileSync(join(work, 'build_results', 'latest', 'artifact_0_0', 'job'), 'utf8')).toBe('second\n');
    expect((await lastBuild(master)).job_name).toBe('Second');

    const unnamed = await runCli(['build', '--master-url', master.url, '-c', client.conf, 'directory', '--project-directory', project],
      { cwd: work, env: client.env, timeoutMs: BUILD_TIMEOUT_MS });
    expect(unnamed.code).toBe(2);
    expect(unnamed.stdout).toContain('Specify one of the following job names: First, Second');
  });

  it('with the wrong secret exits 3 and says which secret and conf file were used, and no build is created', async () => {
    const master = await cluster();
    const client = clientSetup('not-the-masters-secret');
    const run = await runCli(['build', '--master-url', master.url, '-c', client.conf, 'directory', '--project-directory', tempDir()],
      { env: client.env, timeoutMs: BUILD_TIMEOUT_MS });

    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(/HTTP 401/);
    expect(run.stderr).toContain(`signed with the secret of ${client.conf}`);
    expect((await api(master, 'GET', '/v1/build')).body.builds).toEqual([]);
  });

  it('exits 4 with what to do when no master answers', async () => {
    const client = clientSetup('a-secret-of-some-length');
    const url = `http://127.0.0.1:${await freePort()}`;
    const run = await runCli(['build', '--master-url', url, '-c', client.conf], { cwd: tempDir(), env: client.env });

    expect(run.code).toBe(4);
    expect(run.stderr).toContain(`cannot reach the master at ${url}`);
    expect(run.stderr).toContain('-m/--master-url');
  });

  it('cancels the build on Ctrl-C: the build becomes CANCELED, its atoms stop, the CLI exits 2', async () => {
    const master = await cluster(2);
    const client = clientSetup(master.secret);
    // A unique duration marks this test's atoms among the processes of the machine.
    const marker = `sleep 30.${Date.now() % 1_000_000}`;
    const project = projectWith(`
Sleepy:
  commands:
    - ${marker}
  atomizers:
    - N: seq 1 2
`);
    const cli = spawnCli(['build', '--master-url', master.url, '-c', client.conf, 'directory', '--project-directory', project], { env: client.env });
    const build = await eventually('the build to be BUILDING with its atoms running', async () => {
      const latest = (await api(master, 'GET', '/v1/build')).body.builds.at(-1);
      return latest?.status === 'BUILDING' && processesWith(marker).length === 2 ? latest : null;
    });

    await eventually('the CLI to show the build running', () => cli.output().includes(`build ${build.id}: BUILDING 0/2 atoms done`));

    cli.child.kill('SIGINT');

    expect(await cli.exited).toBe(2);
    expect((await waitForBuild(master, build.id)).status).toBe('CANCELED');
    await eventually('the atoms to be gone', () => processesWith(marker).length === 0);
    expect(cli.output()).toContain(`canceling build ${build.id}`);
    expect(cli.output()).toMatch(new RegExp(`build ${build.id}: CANCELED`));
  });
});
