/**
 * Fault suite: every worker of a build lost at once (their links to the master cut and refused). The build
 * waits for workers, goes on when one comes back, and ends ERROR, saying why, when none comes back within
 * no_worker_timeout_seconds.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, postBuild, startTestMaster, tempDir, waitForBuild } from '../support/cluster.ts';
import { workersOf } from '../support/build-results.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import {
  atomsRunningOn, cleanupFaults, createGates, eventsOf, expectNoProcessesLeft, expectOneResultPerAtom, faultJob,
  KILL_GRACE_MS, markedProcesses, RECONNECT_BACKOFF_MAX_MS, startFaultWorker, workerName, type FaultWorker,
} from '../support/fault-workers.ts';

afterEach(async () => {
  await cleanupAll();
  await cleanupFaults();
});

describe('every worker lost', () => {
  it('leaves the build waiting, and it goes on when the workers come back: one result per atom', async () => {
    const master = await startTestMaster({ conf: { noWorkerTimeoutMs: 60_000 } });
    const proxy = await startTcpProxy(master.url);
    const gates = createGates();
    const workers: FaultWorker[] = [];
    for (const role of ['first', 'second']) {
      workers.push(await startFaultWorker(master, { name: workerName(role), masterUrl: proxy.url, holdAtomsAt: gates.dir }));
    }
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: faultJob(4) });
    const held: string[] = [];
    for (const worker of workers) {
      held.push(...await eventually(`${worker.name} to hold an atom`, async () => {
        const values = await atomsRunningOn(master, id, worker.name);
        return values.length === 1 ? values : null;
      }));
    }

    proxy.refuse();
    proxy.cut();
    await eventually('both workers to be declared lost', async () => (await eventsOf(master, 'WORKER_LOST')).length === 2);

    // While it waits, this is all a user is shown: a build BUILDING with nothing done, and no live worker.
    const waiting = (await api(master, 'GET', `/v1/build/${id}`)).body.build;
    expect(waiting).toMatchObject({ status: 'BUILDING', result: null, error_message: null, details: '0 of 4 subjobs are complete (0.0%).' });
    expect((await workersOf(master)).filter((worker) => worker.is_alive)).toEqual([]);
    expect((await api(master, 'GET', '/v1/queue')).body.queue.map((build: any) => build.id)).toEqual([id]);
    const lost = await eventsOf(master, 'WORKER_LOST');
    expect(lost.map((event) => event.worker).sort()).toEqual(workers.map((worker) => worker.name).sort());
    // Their atoms still run out there, cut off: the workers cannot know yet that their leases are gone.
    expect(markedProcesses().length).toBeGreaterThan(0);
    expect(waiting.waiting_for_workers).toEqual({ since: expect.any(Number), gives_up_at: waiting.waiting_for_workers.since + 60 });
    expect((await eventsOf(master, 'BUILD_WAITING_FOR_WORKERS')).map((event) => [event.build_id, event.no_worker_timeout_seconds])).toEqual([[id, 60]]);

    // The held atoms finish while their workers are away; then the workers come back.
    gates.release('all');
    await eventually('the held atoms to end', () => markedProcesses().length === 0);
    proxy.accept();
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    expect(build.waiting_for_workers).toBeNull();

    // Their late results were refused: the held atoms ran again (on whichever worker), once each.
    const outcomes = await expectOneResultPerAtom(master, id, 4);
    const rerun = [...outcomes.values()].filter((outcome) => outcome.attempts === 2).map((outcome) => outcome.value).sort();
    expect(rerun).toEqual(held.sort());
    // Both are back (the second maybe later: its backoff grew while refused), each under its own id (same name
    // and session, issue 15 item 4).
    await eventually('both workers to be back', async () => {
      const alive = (await workersOf(master)).filter((worker) => worker.is_alive);
      return alive.length === 2 && alive.every((worker) => workers.some((old) => old.id === worker.id));
    });
    await expectNoProcessesLeft();
  });

  it('ends the build ERROR with a clear message after no_worker_timeout_seconds without any worker', async () => {
    const master = await startTestMaster({ conf: { noWorkerTimeoutMs: 2_000 } });
    const proxy = await startTcpProxy(master.url);
    const gates = createGates();
    const worker = await startFaultWorker(master, { name: workerName('only'), executors: 2, masterUrl: proxy.url, holdAtomsAt: gates.dir });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: faultJob(2) });
    await eventually('the worker to hold both atoms', async () => (await atomsRunningOn(master, id, worker.name)).length === 2);

    proxy.refuse();
    proxy.cut();
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.error_message).toBe('No worker was connected to the master for 2 s (no_worker_timeout_seconds), so the build could not run. ' +
      'Start a worker with: clusterrunner worker --master-url <this master>');
    // The clock started when the last worker was lost, not when the build was queued.
    const [lost] = await eventsOf(master, 'WORKER_LOST');
    const [finished] = (await eventsOf(master, 'BUILD_FINISHED')).filter((event) => event.build_id === id);
    expect(finished.__timestamp__ - lost.__timestamp__).toBeGreaterThanOrEqual(1.9);
    process.stderr.write(`FIGURE lost->ERROR s ${finished.__timestamp__ - lost.__timestamp__}\n`);
    expect(finished.status).toBe('ERROR');

    // The worker comes back: its leases are refused, so it stops the atoms of the ended build.
    expect(markedProcesses(worker.name).length).toBeGreaterThan(0);
    proxy.accept();
    // Refused for seconds, the worker retries on a backoff of up to 10 s: allow that before it can hear it.
    await expectNoProcessesLeft(worker.name, RECONNECT_BACKOFF_MAX_MS + KILL_GRACE_MS + 5_000);
    await eventually('the worker to rejoin', async () => (await workersOf(master)).some((listed) => listed.is_alive && listed.name === worker.name));
    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build.status).toBe('ERROR');
  });
});
