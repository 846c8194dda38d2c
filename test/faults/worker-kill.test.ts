/**
 * Fault suite: a worker SIGKILLed mid-atom. Its atoms run again on another worker, each atom keeps exactly
 * one result, and the commands it orphaned (they run in process groups of their own, so they outlive it)
 * are killed by the next worker started on its base directory.
 */
import { describe, expect, it } from 'vitest';
import { postBuild, tempDir, waitForBuild } from '../support/cluster.ts';
import { cleanUpFaultsAfterEach, startHeldBuild } from '../support/fault-cluster.ts';
import { workersOf } from '../support/build-results.ts';
import {
  eventsOf, expectNoProcessesLeft, expectOneResultPerAtom, faultJob, markedProcesses, startFaultWorker, workerName,
} from '../support/fault-workers.ts';

cleanUpFaultsAfterEach();

describe('a worker SIGKILLed mid-atom', () => {
  it('has its atoms run again elsewhere, one result each; its next start kills the commands it orphaned', async () => {
    const { master, worker: doomed, id, held } = await startHeldBuild({ role: 'doomed', atoms: 6 });
    // Only now a second worker: the doomed one's atoms are certainly mid-run, the other four run here.
    const survivor = await startFaultWorker(master, { name: workerName('survivor'), executors: 2 });

    await doomed.kill();
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');

    const outcomes = await expectOneResultPerAtom(master, id, 6);
    for (const outcome of outcomes.values()) expect(outcome.worker).toBe(survivor.name);
    const rerun = [...outcomes.values()].filter((outcome) => outcome.attempts === 2).map((outcome) => outcome.value).sort();
    expect(rerun).toEqual(held);
    expect((await eventsOf(master, 'WORKER_LOST')).map((event) => event.worker)).toEqual([doomed.name]);

    // Nothing could stop the killed worker's commands: they still run, orphaned (this is the fault).
    const orphans = markedProcesses(doomed.name);
    expect(orphans.length).toBeGreaterThan(0);
    // Restarted on its base directory (as a service manager would), the worker kills them and takes work again.
    const restarted = await startFaultWorker(master, { name: doomed.name, executors: 2, dir: doomed.dir });
    await expectNoProcessesLeft(doomed.name);
    expect(restarted.id).not.toBe(doomed.id);
    expect(restarted.process.output()).toContain('killed processes left running by a worker process that died before this one');

    survivor.signal('SIGTERM');
    expect(await survivor.process.exited).toBe(0);
    const next = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: faultJob(2) });
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
    for (const outcome of (await expectOneResultPerAtom(master, next, 2)).values()) expect(outcome).toMatchObject({ worker: restarted.name, attempts: 1 });
    expect((await workersOf(master)).filter((worker) => worker.is_alive).map((worker) => worker.id)).toEqual([restarted.id]);
    await expectNoProcessesLeft();
  });
});
