/**
 * `clusterrunner build` in local mode and `clusterrunner stop`: the CLI starts a real master and worker as
 * background processes, reuses them, and stops them. Each test has its own HOME, conf file, base folder and
 * port; whatever it started is stopped afterwards, even when it fails midway.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, eventually, tempDir } from '../support/cluster.ts';
import { freePort, runCli } from '../support/build-results.ts';
import { isClusterRunnerProcess } from '../../cli/local-cluster.ts';
import { clientSetup, killFromPidFiles, projectWith, type ClientSetup } from './helpers.ts';
import { readPidFile } from '../../cli/local-cluster.ts';

const started: ClientSetup[] = [];

afterEach(async () => {
  for (const setup of started.splice(0)) {
    await runCli(['stop', '-c', setup.conf], { env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
    killFromPidFiles(setup.base);
  }
  await cleanupAll();
}, 600_000);

/** Generous: starting a master and a worker on a loaded machine has taken over a minute. */
const BUILD_TIMEOUT_MS = 180_000;
const TEST_TIMEOUT_MS = 600_000;

async function localSetup(): Promise<ClientSetup & { url: string }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const setup = clientSetup('a-local-secret-for-tests', { master_url: url, port, kill_grace_seconds: 1, heartbeat_interval: 0.5 });
  started.push(setup);
  return { ...setup, url };
}

const JOB = `
Local:
  commands:
    - echo "atom $N" > "$ARTIFACT_DIR/out.txt"
  atomizers:
    - N: seq 1 2
`;

describe('clusterrunner build in local mode', () => {
  it('starts a master and a worker, reuses them for the next build, and `stop` stops them', async () => {
    const setup = await localSetup();
    const project = projectWith(JOB);
    const masterPidFile = join(setup.base, 'master.pid');
    const workerPidFile = join(setup.base, 'worker.pid');

    const first = await runCli(['build', '-c', setup.conf], { cwd: project, env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toContain('started a local master');
    expect(first.stdout).toContain('started a local worker');
    expect(readFileSync(join(project, 'build_results', '1', 'artifact_1_0', 'out.txt'), 'utf8')).toBe('atom 2\n');
    const masterPid = readPidFile(masterPidFile);
    const workerPid = readPidFile(workerPidFile);
    expect(masterPid).not.toBeNull();
    expect(workerPid).not.toBeNull();
    expect(isClusterRunnerProcess(masterPid!)).toBe(true);
    expect(isClusterRunnerProcess(workerPid!)).toBe(true);
    expect((await fetch(`${setup.url}/`)).status).toBe(200);
    expect(existsSync(join(setup.base, 'logs', 'master.log'))).toBe(true);

    const second = await runCli(['build', '-c', setup.conf], { cwd: project, env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
    expect(second.code, `STDOUT<${second.stdout}> STDERR<${second.stderr}>`).toBe(0);
    expect(second.stdout).not.toContain('started a local');
    expect(second.stdout).toMatch(/build 2: SUCCESS/);
    expect(readPidFile(masterPidFile)).toBe(masterPid);
    expect(readPidFile(workerPidFile)).toBe(workerPid);

    const stop = await runCli(['stop', '-c', setup.conf], { env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
    expect(stop.code, stop.stdout + stop.stderr).toBe(0);
    expect(stop.stdout).toContain(`stopped the local worker (pid ${workerPid})`);
    expect(stop.stdout).toContain(`stopped the local master (pid ${masterPid})`);
    expect(isClusterRunnerProcess(masterPid!)).toBe(false);
    expect(isClusterRunnerProcess(workerPid!)).toBe(false);
    expect(existsSync(masterPidFile)).toBe(false);
    expect(existsSync(workerPidFile)).toBe(false);

    const again = await runCli(['stop', '-c', setup.conf], { env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('no local master or worker was running');
  }, TEST_TIMEOUT_MS);

  it('starts a new worker when its worker died but the master still runs', async () => {
    const setup = await localSetup();
    const project = projectWith(JOB);
    const first = await runCli(['build', '-c', setup.conf], { cwd: project, env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const masterPid = readPidFile(join(setup.base, 'master.pid'));
    const workerPid = readPidFile(join(setup.base, 'worker.pid'))!;

    process.kill(-workerPid, 'SIGKILL');
    await eventually('the worker to be gone', () => !isClusterRunnerProcess(workerPid));

    const second = await runCli(['build', '-c', setup.conf], { cwd: project, env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
    const masterLog = () => readFileSync(join(setup.base, 'logs', 'master.log'), 'utf8').slice(-4000);
    expect(second.code, `STDOUT<${second.stdout}> STDERR<${second.stderr}> MASTER LOG<${masterLog()}>`).toBe(0);
    expect(second.stdout).not.toContain('started a local master');
    expect(second.stdout).toContain('started a local worker');
    expect(readPidFile(join(setup.base, 'master.pid'))).toBe(masterPid);
    const newWorkerPid = readPidFile(join(setup.base, 'worker.pid'));
    expect(newWorkerPid).not.toBe(workerPid);
    expect(isClusterRunnerProcess(newWorkerPid!)).toBe(true);
  }, TEST_TIMEOUT_MS);

  it('`stop` leaves alone a process whose pid a stale pid file names', async () => {
    const setup = await localSetup();
    const { mkdirSync, writeFileSync } = await import('node:fs');
    mkdirSync(setup.base, { recursive: true });
    // This test's own process is alive and is not ClusterRunner's master.
    writeFileSync(join(setup.base, 'master.pid'), `${process.pid}\n`);
    const stop = await runCli(['stop', '-c', setup.conf], { env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
    expect(stop.code, stop.stdout + stop.stderr).toBe(0);
    expect(stop.stdout).toContain('is no longer running');
    expect(stop.stdout).toContain('signaled nothing');
    expect(existsSync(join(setup.base, 'master.pid'))).toBe(false);
  }, TEST_TIMEOUT_MS);

  it('says what went wrong when the local master cannot start', async () => {
    const setup = await localSetup();
    // A port some other program holds: the master fails to listen, and the build says so with its log.
    const { createServer } = await import('node:net');
    // Connections are dropped at once: a socket nobody reads would never notice the CLI hang up, and
    // close() would wait for it.
    const blocker = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => blocker.listen(Number(new URL(setup.url).port), '0.0.0.0', resolve));
    try {
      const run = await runCli(['build', '-c', setup.conf], { cwd: tempDir(), env: setup.env, timeoutMs: BUILD_TIMEOUT_MS });
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('the local master exited');
      expect(run.stderr).toContain(join(setup.base, 'logs', 'master.log'));
      expect(existsSync(join(setup.base, 'master.pid'))).toBe(false);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  }, TEST_TIMEOUT_MS);
});
