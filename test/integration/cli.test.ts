/**
 * `bin/clusterrunner` as a user runs it (SPEC §8): real master and worker processes, their configuration
 * files, signals and exit codes. Every process gets its own HOME so the real ~/.clusterrunner is never touched.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, postBuild, spawnCli, startTestMaster, startTestWorker, tempDir, waitForBuild, writeConf, type CliProcess } from '../support/cluster.ts';
import { atomsOf, downloadArtifacts, freePort, readText, runCli, startCliWorker, workersOf } from '../support/build-results.ts';

afterEach(cleanupAll);

interface CliMaster {
  readonly url: string;
  readonly secret: string;
  readonly process: CliProcess;
}

/** `clusterrunner master -p <port> -c <conf>`, once it answers GET /. */
async function startCliMaster(): Promise<CliMaster> {
  const dir = tempDir('cr-cli-master-');
  const port = await freePort();
  const secret = randomBytes(24).toString('hex');
  const conf = writeConf(dir, 'master', { general: { secret, base_directory: join(dir, 'base') } });
  const master = spawnCli(['master', '-p', String(port), '-c', conf], { env: { HOME: dir } });
  const url = `http://127.0.0.1:${port}`;
  await eventually('the master to answer GET /', async () => {
    if (master.child.exitCode !== null) throw new Error(`master exited early: ${master.output()}`);
    return (await fetch(`${url}/`)).status === 200;
  });
  return { url, secret, process: master };
}

/** `clusterrunner <command> -m URL -e N -c conf`, once the master lists it; returns the process and its listing. */
async function startWorkerCommand(master: { url: string; secret: string }, command: 'worker' | 'slave', executors: number): Promise<{ process: CliProcess; listed: any }> {
  const dir = tempDir('cr-cli-worker-');
  const conf = writeConf(dir, 'worker', { general: { secret: master.secret, base_directory: join(dir, 'base') }, worker: { heartbeat_interval: 0.2 } });
  const name = `${command}-${randomBytes(3).toString('hex')}`;
  const worker = spawnCli([command, '-m', master.url, '-e', String(executors), '-n', name, '-c', conf], { env: { HOME: dir } });
  const listed = await eventually(`${name} to connect`, async () => {
    if (worker.child.exitCode !== null) throw new Error(`worker exited early: ${worker.output()}`);
    return (await workersOf(master)).find((entry) => entry.name === name && entry.is_alive);
  });
  return { process: worker, listed };
}

describe('clusterrunner master', () => {
  it('answers GET / and exits 0 on SIGTERM', async () => {
    const master = await startCliMaster();
    const response = await api(master, 'GET', '/');
    expect(response.status).toBe(200);
    expect(response.body.master.status).toBe('Master service is up.');
    master.process.child.kill('SIGTERM');
    expect(await master.process.exited).toBe(0);
  });

  it('exits 0 on SIGTERM while a worker is still connected', async () => {
    const master = await startCliMaster();
    await startTestWorker(master, { name: 'still-connected' });
    await eventually('the worker to connect', async () => (await workersOf(master)).length === 1);
    master.process.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const tooLate = new Promise((resolve) => {
      timer = setTimeout(() => resolve('still running after 10 s'), 10_000);
    });
    const exited = await Promise.race([master.process.exited, tooLate]);
    clearTimeout(timer);
    expect(exited, master.process.output().slice(-3000)).toBe(0);
  });
});

describe('clusterrunner worker', () => {
  it('connects with -m/-e, also as `slave`, and drains and exits 0 on SIGTERM', async () => {
    const master = await startCliMaster();
    const worker = await startWorkerCommand(master, 'worker', 2);
    expect(worker.listed.num_executors).toBe(2);
    const slave = await startWorkerCommand(master, 'slave', 1);
    expect(slave.listed.num_executors).toBe(1);

    const id = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: { commands: ['true'], atomizers: [{ N: 'seq 1 4' }] } });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');

    worker.process.child.kill('SIGTERM');
    slave.process.child.kill('SIGTERM');
    expect(await worker.process.exited).toBe(0);
    expect(await slave.process.exited).toBe(0);
    expect(await workersOf(master)).toEqual([]);
  });

  it('drains on POST /v1/worker/:id/shutdown: leaves the list at once, finishes its atom, exits 0', async () => {
    const master = await startTestMaster();
    const worker = await startCliWorker(master, { name: 'draining-worker' });
    const [listed] = await workersOf(master);
    const project = tempDir('cr-project-');
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        commands: ['sleep 1.5', 'echo finished > "$ARTIFACT_DIR/done"'],
        teardown_build: ['echo torn down > "$PROJECT_DIR/teardown"'],
        atomizers: [{ N: 'echo only' }],
      },
    });
    await eventually('the atom to run', async () => (await atomsOf(master, id)).some((atom) => atom.state === 'IN_PROGRESS'));

    const response = await api(master, 'POST', `/v1/worker/${listed.id}/shutdown`);
    expect(response.status).toBe(200);
    expect(await workersOf(master)).toEqual([]);

    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    const [atom] = await atomsOf(master, id);
    expect([atom.attempts, atom.exit_code]).toEqual([1, 0]);
    expect(readText(await downloadArtifacts(master, id), 'artifact_0_0/done')).toBe('finished\n');
    expect(await worker.exited).toBe(0);
    expect(readFileSync(join(project, 'teardown'), 'utf8')).toBe('torn down\n');
  });

  it('with the wrong secret is refused and exits non-zero, saying so', async () => {
    const master = await startTestMaster();
    const dir = tempDir('cr-cli-worker-');
    const conf = writeConf(dir, 'worker', { general: { secret: 'not-the-masters-secret', base_directory: join(dir, 'base') } });
    let isRunning = true;
    const run = runCli(['worker', '-m', master.url, '-n', 'intruder', '-c', conf], { env: { HOME: dir } }).finally(() => {
      isRunning = false;
    });
    const seen = new Set<string>();
    while (isRunning) {
      for (const worker of await workersOf(master)) seen.add(worker.name);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const result = await run;
    expect(result.code).not.toBe(0);
    expect(result.code).not.toBe('TIMEOUT');
    expect(`${result.stdout}${result.stderr}`).toMatch(/secret/i);
    expect([...seen]).toEqual([]);
  });
});

describe('the configuration file', () => {
  it('is created with mode 0600 and a fresh 64-hex-character secret under [general] when missing', async () => {
    const home = tempDir('cr-home-');
    const conf = join(home, 'conf-dir', 'clusterrunner.conf');
    const port = await freePort();
    const master = spawnCli(['master', '-p', String(port), '-c', conf], { env: { HOME: home } });
    await eventually('the master to answer GET /', async () => {
      if (master.child.exitCode !== null) throw new Error(`master exited early: ${master.output()}`);
      return (await fetch(`http://127.0.0.1:${port}/`)).status === 200;
    });
    expect(statSync(conf).mode & 0o777).toBe(0o600);
    const lines = readFileSync(conf, 'utf8').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !/^[;#]/.test(line));
    expect(lines[0]).toBe('[general]');
    const secretAt = lines.findIndex((line) => /^secret\s*=/.test(line));
    expect(secretAt).toBeGreaterThan(0);
    expect(lines.slice(1, secretAt).some((line) => line.startsWith('['))).toBe(false);
    expect(lines[secretAt]!.replace(/^secret\s*=\s*/, '')).toMatch(/^[0-9a-f]{64}$/);
    master.child.kill('SIGTERM');
    expect(await master.exited).toBe(0);
  });

  it('holding a secret but readable by others is refused with a hint to chmod 600', async () => {
    const home = tempDir('cr-home-');
    const conf = writeConf(home, 'open', { general: { secret: 'a-secret-others-can-read', base_directory: join(home, 'base') } });
    chmodSync(conf, 0o644);
    const result = await runCli(['master', '-p', String(await freePort()), '-c', conf], { env: { HOME: home } });
    expect(result.code).not.toBe(0);
    expect(result.code).not.toBe('TIMEOUT');
    expect(result.stderr).toContain(`chmod 600 ${conf}`);
  });

  it('with an unknown key is refused, naming the key and its line', async () => {
    const home = tempDir('cr-home-');
    const conf = writeConf(home, 'typo', { general: { secret: 'a-good-enough-secret', base_directory: join(home, 'base'), hearbeat_interval: 2 } });
    const result = await runCli(['worker', '-m', 'http://127.0.0.1:9', '-c', conf], { env: { HOME: home } });
    expect(result.code).not.toBe(0);
    expect(result.code).not.toBe('TIMEOUT');
    expect(result.stderr).toContain('hearbeat_interval');
    expect(result.stderr).toMatch(/line 4\b/);
  });
});

describe('clusterrunner help and mistakes', () => {
  it('--help and master --help exit 0; an unknown command exits non-zero', async () => {
    const home = tempDir('cr-home-');
    const help = await runCli(['--help'], { env: { HOME: home } });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('master');
    expect(help.stdout).toContain('worker');
    const masterHelp = await runCli(['master', '--help'], { env: { HOME: home } });
    expect(masterHelp.code).toBe(0);
    expect(masterHelp.stdout).toContain('--port');
    const unknown = await runCli(['no-such-command'], { env: { HOME: home } });
    expect(unknown.code).not.toBe(0);
    expect(unknown.code).not.toBe('TIMEOUT');
    expect(unknown.stderr).toContain('no-such-command');
  });
});
