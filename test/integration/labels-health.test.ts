import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  api, cleanupAll, eventually, postBuild, spawnCli, startTestMaster, tempDir, waitForBuild, writeConf, type CliProcess, type TestMaster,
} from '../support/cluster.ts';

afterEach(cleanupAll);

/** Two one-atom subjobs. */
const job = (requires?: string[]) => ({ commands: ['echo "atom $X"'], atomizers: [{ X: 'seq 1 2' }], ...(requires ? { requires } : {}) });

async function workerView(master: TestMaster, name: string): Promise<any> {
  const workers = (await api(master, 'GET', '/v1/worker')).body.workers as any[];
  return workers.find((worker) => worker.name === name && worker.is_alive);
}

/** `clusterrunner worker` as a real process with its own conf; waits until the master lists it. */
async function startWorkerProcess(master: TestMaster, options: { labels?: string; conf?: Record<string, string | number> } = {}): Promise<{ name: string; process: CliProcess }> {
  const dir = tempDir('cr-labels-worker-');
  const conf = writeConf(dir, 'worker', {
    general: { secret: master.secret, base_directory: join(dir, 'base') },
    // min_disk_free_bytes 0: a full disk on the test machine must not take these workers out of rotation.
    worker: { heartbeat_interval: 0.2, min_disk_free_bytes: 0, ...options.conf },
  });
  const name = `w-${randomBytes(3).toString('hex')}`;
  const args = ['worker', '-m', master.url, '-n', name, '-c', conf, ...(options.labels ? ['--labels', options.labels] : [])];
  const process = spawnCli(args, { env: { HOME: dir } });
  await eventually(`${name} to connect`, async () => {
    if (process.child.exitCode !== null) throw new Error(`worker exited early: ${process.output()}`);
    return (await workerView(master, name))?.last_heartbeat != null;
  }, 60_000);
  return { name, process };
}

async function subjobWorkers(master: TestMaster, id: number): Promise<string[]> {
  const subjobs = (await api(master, 'GET', `/v1/build/${id}/subjob`)).body.subjobs as any[];
  return [...new Set(subjobs.map((subjob) => subjob.worker as string))];
}

describe('labels (SPEC §13)', () => {
  it('a build that requires labels waits, says so, then runs on the worker carrying them when it joins', async () => {
    const master = await startTestMaster({ conf: { noWorkerTimeoutMs: 120_000 } });
    const plain = await startWorkerProcess(master);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: job(['gpu', 'linux']) });
    const waiting = await waitForBuild(master, id, (build) => build.waiting_for_workers?.requires !== undefined, 60_000);
    expect(waiting.waiting_for_workers.requires).toEqual(['gpu', 'linux']);
    expect(waiting.waiting_for_workers.gives_up_at).toBeGreaterThan(waiting.waiting_for_workers.since);

    const gpu = await startWorkerProcess(master, { labels: 'linux,gpu,fast' });
    const done = await waitForBuild(master, id, undefined, 60_000);
    expect(done.status).toBe('SUCCESS');
    expect(done.waiting_for_workers).toBeNull();
    expect(await subjobWorkers(master, id)).toEqual([gpu.name]);
    expect((await workerView(master, gpu.name)).labels).toEqual(['fast', 'gpu', 'linux']);
    expect((await workerView(master, plain.name)).labels).toEqual([]);

    // Work without requirements still goes to any worker.
    const any = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: job() });
    expect((await waitForBuild(master, any, undefined, 60_000)).status).toBe('SUCCESS');
  });

  it('a build no connected worker can serve errors after no_worker_timeout_seconds, naming the labels', async () => {
    const master = await startTestMaster({ conf: { noWorkerTimeoutMs: 2000 } });
    await startWorkerProcess(master, { labels: 'linux' });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: job(['arm64']) });
    const waiting = await waitForBuild(master, id, (build) => build.waiting_for_workers !== null || build.status === 'ERROR', 60_000);
    if (waiting.status !== 'ERROR') expect(waiting.waiting_for_workers.requires).toEqual(['arm64']);
    const done = await waitForBuild(master, id, undefined, 60_000);
    expect(done.status).toBe('ERROR');
    expect(done.error_message).toMatch(/No connected worker carried every label this build requires \(arm64\) for 2 s \(no_worker_timeout_seconds\)/);
    expect(done.error_message).toContain('--labels arm64');
  });
});

describe('worker health (SPEC §13)', () => {
  it('heartbeats carry the machine figures into GET /v1/worker', async () => {
    const master = await startTestMaster();
    const { name } = await startWorkerProcess(master, { labels: 'linux' });
    const view = await eventually('figures', async () => {
      const worker = await workerView(master, name);
      return worker?.cpu_count != null && worker.disk_free_bytes != null ? worker : null;
    }, 60_000);
    expect(view).toMatchObject({ health: 'healthy', health_reason: null, labels: ['linux'], pool: null });
    expect(view.cpu_count).toBeGreaterThan(0);
    expect(view.load1).toBeGreaterThanOrEqual(0);
    expect(view.memory_total_bytes).toBeGreaterThan(0);
    expect(view.memory_available_bytes).toBeGreaterThan(0);
    expect(view.disk_free_bytes).toBeGreaterThan(0);
    expect(Math.abs(view.last_heartbeat - Date.now() / 1000)).toBeLessThan(60);
  });

  it('a failing health check takes the worker out of rotation, and a passing one brings it back', async () => {
    const master = await startTestMaster({ conf: { noWorkerTimeoutMs: 120_000 } });
    const dir = tempDir();
    const flag = join(dir, 'broken');
    writeFileSync(flag, '');
    // A script: in clusterrunner.conf an unquoted ";" starts a comment.
    const check = join(dir, 'check.sh');
    writeFileSync(check, `#!/bin/sh\nif [ -e ${flag} ]; then echo "disk controller degraded"; exit 2; fi\n`, { mode: 0o755 });
    const { name } = await startWorkerProcess(master, { conf: { health_check_command: check, health_check_interval_seconds: 0.2 } });
    const sick = await eventually('the worker to be unhealthy', async () => {
      const worker = await workerView(master, name);
      return worker?.health === 'unhealthy' ? worker : null;
    }, 60_000);
    expect(sick.health_reason).toBe('health_check_command exited with 2: disk controller degraded');

    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: job() });
    await waitForBuild(master, id, (build) => build.num_atoms === 2, 60_000);
    // A second of heartbeats (each a fresh verdict) later, still nothing of the build has run there.
    const seen = (await workerView(master, name)).last_heartbeat as number;
    await eventually('a second of heartbeats', async () => (await workerView(master, name)).last_heartbeat > seen + 1, 60_000);
    const meanwhile = (await api(master, 'GET', `/v1/build/${id}`)).body.build;
    expect(meanwhile.status).not.toBe('SUCCESS');
    expect((await workerView(master, name)).current_build_ids).toEqual([]);

    rmSync(flag);
    const done = await waitForBuild(master, id, undefined, 60_000);
    expect(done.status).toBe('SUCCESS');
    expect(await subjobWorkers(master, id)).toEqual([name]);
    expect((await workerView(master, name)).health).toBe('healthy');
  });
});
