/**
 * Fault suite: a signal to the worker's whole process group while a build's setup runs — what Ctrl-C in a
 * terminal, a service manager's stop and a pool's stop all send. The worker forks commands from a small
 * spawner process in its group (issue 18); that spawner must not die of the signal, or the setup it ran is
 * reported failed while it goes on, is forgotten, is never torn down, and a reconnect runs it a second time
 * (the pool soak's "setup ran 2 times" on a worker frozen, stopped as down and thawed: issue 15).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually, postBuild, startTestMaster, tempDir, waitForBuild } from '../support/cluster.ts';
import { cleanUpFaultsAfterEach } from '../support/fault-cluster.ts';
import {
  LEASE_WINDOW_MS, eventsOf, expectNoProcessesLeft, faultJob, markedProcesses, startFaultWorker, workerName,
} from '../support/fault-workers.ts';

cleanUpFaultsAfterEach();

/** A job whose setup records its worker, then waits at a gate; its teardown records its worker. */
function gatedSetupJob(project: string, gate: string, atoms: number): Record<string, unknown> {
  return faultJob(atoms, {
    setup_build: [`echo "$FAULT_WORKER" >> "${join(project, 'setups')}"`, `while [ ! -e "${gate}" ]; do sleep 0.05; done`],
    teardown_build: [`echo "$FAULT_WORKER" >> "${join(project, 'teardowns')}"`],
  });
}

function linesOf(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((line) => line !== '') : [];
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // gone already
  }
}

describe('a signal to the worker\'s whole process group during a setup', () => {
  it('drains the worker as a signal to the worker alone would: the setup is stopped, torn down once, nothing left', async () => {
    const master = await startTestMaster();
    const project = tempDir('cr-project-');
    const gate = join(tempDir('cr-gate-'), 'open');
    const worker = await startFaultWorker(master, { name: workerName('grouped'), executors: 2 });
    await postBuild(master, { type: 'directory', project_directory: project, config: gatedSetupJob(project, gate, 3) });
    await eventually('the setup to run', () => linesOf(join(project, 'setups')).length === 1 && markedProcesses(worker.name).length > 0);

    signalGroup(worker.pid, 'SIGTERM');
    expect(await worker.process.exited).toBe(0);
    expect(linesOf(join(project, 'setups'))).toEqual([worker.name]);
    expect(linesOf(join(project, 'teardowns'))).toEqual([worker.name]);
    await expectNoProcessesLeft(worker.name);
  });

  it('of a worker frozen past its lease, stopped as a pool stops a worker it counts as down, then thawed: setup ran once', async () => {
    const master = await startTestMaster();
    const project = tempDir('cr-project-');
    const gate = join(tempDir('cr-gate-'), 'open');
    const frozen = await startFaultWorker(master, { name: workerName('stopped'), executors: 2 });
    const id = await postBuild(master, { type: 'directory', project_directory: project, config: gatedSetupJob(project, gate, 3) });
    await eventually('the setup to run', () => linesOf(join(project, 'setups')).length === 1);

    // The worker process alone is frozen, as the soak does; its spawner and the setup go on.
    process.kill(frozen.pid, 'SIGSTOP');
    await eventually('the master to declare the frozen worker lost', async () =>
      (await eventsOf(master, 'WORKER_LOST')).some((event) => event.worker === frozen.name), LEASE_WINDOW_MS + 10_000);
    // The pool's stop: SIGTERM to the group, twice (the worker's pends until it is thawed).
    signalGroup(frozen.pid, 'SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 200));
    signalGroup(frozen.pid, 'SIGTERM');
    writeFileSync(gate, '');
    await new Promise((resolve) => setTimeout(resolve, 500));
    process.kill(frozen.pid, 'SIGCONT');
    expect(await frozen.process.exited).toBe(0);
    expect(linesOf(join(project, 'setups'))).toEqual([frozen.name]);
    expect(linesOf(join(project, 'teardowns'))).toEqual([frozen.name]);
    await expectNoProcessesLeft(frozen.name);

    // The build goes on elsewhere.
    const healthy = await startFaultWorker(master, { name: workerName('healthy'), executors: 2 });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    expect(linesOf(join(project, 'setups')).filter((name) => name === healthy.name)).toHaveLength(1);
  });
});
