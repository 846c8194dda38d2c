/**
 * Fault suite: a worker frozen with SIGSTOP. Its socket stays open but its heartbeats stop, so the master
 * declares it dead after the lease window and its atoms run elsewhere. Thawed, it finds its leases refused:
 * the result it finished while frozen is dropped, the atom it still runs is killed, the build it had set up
 * is torn down, and it rejoins as a fresh worker that takes new work.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { api, eventually, postBuild, tempDir, waitForBuild } from '../support/cluster.ts';
import { cleanUpFaultsAfterEach, recordingTeardowns, startHeldBuild } from '../support/fault-cluster.ts';
import { workersOf } from '../support/build-results.ts';
import {
  KILL_GRACE_MS, LEASE_WINDOW_MS, eventsOf, expectNoProcessesLeft,
  expectOneResultPerAtom, faultJob, markedProcesses, startFaultWorker, workerName,
} from '../support/fault-workers.ts';

cleanUpFaultsAfterEach();

describe('a worker frozen with SIGSTOP', () => {
  it('is declared dead after the lease window; thawed, its late result is refused, its atom killed, and it rejoins fresh', async () => {
    const { master, gates, project, worker: frozen, id, held } = await startHeldBuild({ role: 'frozen', atoms: 6, job: recordingTeardowns });
    const [finishesWhileFrozen, stillRunning] = held as [string, string];
    const healthy = await startFaultWorker(master, { name: workerName('healthy'), executors: 2 });

    frozen.freeze();
    const frozenAt = Date.now();
    // One of its atoms ends while the worker cannot hear of it: a result that can only arrive late.
    gates.release([finishesWhileFrozen]);
    await eventually('the released atom to end', () => markedProcesses(frozen.name, finishesWhileFrozen).length === 0);

    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    // Dead only once it had been silent for the whole lease window.
    const [lost] = await eventsOf(master, 'WORKER_LOST');
    expect(lost.worker).toBe(frozen.name);
    expect(lost.__timestamp__ * 1000).toBeGreaterThanOrEqual(frozenAt + LEASE_WINDOW_MS - 1000);
    expect((await workersOf(master)).find((worker) => worker.id === frozen.id).is_alive).toBe(false);
    // Its held atom still runs: a frozen worker cannot stop anything.
    expect(markedProcesses(frozen.name).length).toBeGreaterThan(0);

    frozen.thaw();
    const thawedAt = Date.now();
    // Its leases are refused: it stops what it still ran, within the kill grace (plus time to notice and reconnect).
    await expectNoProcessesLeft(frozen.name, KILL_GRACE_MS + 5_000);
    // Same name, same session: it rejoins under its own id (issue 15 item 4).
    const rejoined = await eventually('the thawed worker to rejoin under its own id', async () =>
      (await workersOf(master)).find((worker) => worker.name === frozen.name && worker.is_alive && worker.id === frozen.id));
    expect(Date.now() - thawedAt).toBeLessThan(10_000);
    // The build it had set up is torn down there: its registration listed it, and the master is done with it.
    await eventually('the thawed worker to tear down the old build', () => teardowns(project).includes(frozen.name));

    // Nothing of its late result made it: every atom has one result, from the healthy worker.
    const outcomes = await expectOneResultPerAtom(master, id, 6);
    for (const outcome of outcomes.values()) expect(outcome.worker).toBe(healthy.name);
    const rerun = [...outcomes.values()].filter((outcome) => outcome.attempts === 2).map((outcome) => outcome.value).sort();
    expect(rerun).toEqual([finishesWhileFrozen, stillRunning].sort());
    expect((await eventsOf(master, 'ATOM_FINISH')).filter((event) => event.build_id === id)).toHaveLength(6);

    // A fresh worker, able to take new work: alone now, it runs the next build.
    healthy.signal('SIGTERM');
    expect(await healthy.process.exited).toBe(0);
    gates.release('all');
    const next = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: faultJob(3) });
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
    for (const outcome of (await expectOneResultPerAtom(master, next, 3)).values()) {
      expect(outcome).toEqual({ value: outcome.value, worker: frozen.name, attempts: 1 });
    }
    expect((await api(master, 'GET', `/v1/worker/${rejoined.id}`)).body.worker.is_alive).toBe(true);
    await expectNoProcessesLeft();
  });
});

function teardowns(project: string): string {
  try {
    return readFileSync(join(project, 'teardowns'), 'utf8');
  } catch {
    return '';
  }
}
