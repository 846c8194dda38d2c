/**
 * Fault suite: the connection between a worker and the master fails while the worker lives. The worker
 * dials the master through a TCP proxy (test/support/tcp-proxy.ts) that cuts, refuses or freezes it.
 * - a cut shorter than the lease window: the worker reconnects and resumes its leases, nothing runs twice;
 * - a cut longer than the lease window: its atoms run elsewhere, its late results are refused;
 * - a half-open connection: the worker notices the silence by its own heartbeat timeout; healed in time it
 *   resumes its leases, and when it cannot get back, the master notices the silence on the open socket.
 * What the master says during a short cut is in worker-missed-messages.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { eventually, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { cleanUpFaultsAfterEach, startHeldBuild } from '../support/fault-cluster.ts';
import { workersOf } from '../support/build-results.ts';
import type { TcpProxy } from '../support/tcp-proxy.ts';
import {
  LEASE_WINDOW_MS, eventsOf, expectNoProcessesLeft, expectOneResultPerAtom,
  markedProcesses, startFaultWorker, workerName, type FaultWorker, type FaultWorkerOptions, type Gates,
} from '../support/fault-workers.ts';

cleanUpFaultsAfterEach();

const SILENCE_LOG = 'the master stopped answering; reconnecting';

interface Cut {
  readonly master: TestMaster;
  readonly proxy: TcpProxy;
  readonly gates: Gates;
  readonly worker: FaultWorker;
  readonly buildId: number;
  /** The two atoms the proxied worker holds. */
  readonly held: [string, string];
}

/** A master, a worker behind a proxy holding two atoms of a build of `atoms` atoms. */
async function proxiedWorkerHoldingTwo(atoms: number, worker: Partial<FaultWorkerOptions> = {}): Promise<Cut> {
  const cut = await startHeldBuild({ role: 'proxied', atoms, viaProxy: true, worker });
  return { master: cut.master, proxy: cut.proxy!, gates: cut.gates, worker: cut.worker, buildId: cut.id, held: cut.held as [string, string] };
}

/** Lets the held atom of that value finish, and waits until it has (its result is then the worker's to send). */
async function releaseAndWaitForEnd(cut: Cut, value: string): Promise<void> {
  cut.gates.release([value]);
  await eventually(`atom ${value} to end`, () => markedProcesses(cut.worker.name, value).length === 0);
}

/** The WORKER_LOST events, once there is one. */
async function lostWorkers(master: TestMaster): Promise<any[] | null> {
  const events = await eventsOf(master, 'WORKER_LOST');
  return events.length > 0 ? events : null;
}

describe('a connection cut shorter than the lease window', () => {
  it('is survived: the worker reconnects and resumes its leases; no atom runs twice, the result made while away arrives', async () => {
    const cut = await proxiedWorkerHoldingTwo(2);
    const [finishesWhileAway, finishesAfter] = cut.held;

    cut.proxy.refuse();
    cut.proxy.cut();
    const cutAt = Date.now();
    await eventually('the worker to try to reconnect', () => cut.proxy.refusedCount > 0);
    await releaseAndWaitForEnd(cut, finishesWhileAway);
    cut.proxy.accept();
    await eventually('the worker to reconnect', () => cut.proxy.acceptedCount === 2 && cut.proxy.openCount === 1);
    // The premise: back well inside the lease window (else this test proves nothing).
    expect(Date.now() - cutAt).toBeLessThan(LEASE_WINDOW_MS);

    cut.gates.release([finishesAfter]);
    expect((await waitForBuild(cut.master, cut.buildId)).status).toBe('SUCCESS');
    const outcomes = await expectOneResultPerAtom(cut.master, cut.buildId, 2);
    for (const outcome of outcomes.values()) expect(outcome).toMatchObject({ worker: cut.worker.name, attempts: 1 });
    expect(await eventsOf(cut.master, 'WORKER_LOST')).toEqual([]);
    expect((await workersOf(cut.master)).map((worker) => [worker.id, worker.is_alive])).toEqual([[cut.worker.id, true]]);
    await expectNoProcessesLeft();
  });
});

describe('a connection cut longer than the lease window', () => {
  it('has the atoms run elsewhere; back, the worker\'s late results are refused, its atom is killed, it rejoins fresh', async () => {
    const cut = await proxiedWorkerHoldingTwo(4);
    const other = await startFaultWorker(cut.master, { name: workerName('direct'), executors: 2 });
    const [finishesWhileAway, stillRunning] = cut.held;

    cut.proxy.refuse();
    cut.proxy.cut();
    await releaseAndWaitForEnd(cut, finishesWhileAway);
    const [lost] = await eventually('the master to declare the worker lost', () => lostWorkers(cut.master));
    expect(lost).toMatchObject({ worker: cut.worker.name, reason: 'disconnected' });
    expect((await waitForBuild(cut.master, cut.buildId)).status).toBe('SUCCESS');

    // Back: it offers the lease it still runs and the result it kept; the master honours neither.
    cut.proxy.accept();
    await expectNoProcessesLeft(cut.worker.name);
    // Same name, same session: it rejoins under its own id (issue 15 item 4), its old work gone.
    await eventually('the worker to rejoin under its own id', async () =>
      (await workersOf(cut.master)).some((worker) => worker.name === cut.worker.name && worker.is_alive && worker.id === cut.worker.id));

    const outcomes = await expectOneResultPerAtom(cut.master, cut.buildId, 4);
    for (const outcome of outcomes.values()) expect(outcome.worker).toBe(other.name);
    const rerun = [...outcomes.values()].filter((outcome) => outcome.attempts === 2).map((outcome) => outcome.value).sort();
    expect(rerun).toEqual([finishesWhileAway, stillRunning].sort());
    expect((await eventsOf(cut.master, 'ATOM_FINISH')).filter((event) => event.build_id === cut.buildId)).toHaveLength(4);
    await expectNoProcessesLeft();
  });
});

describe('a half-open connection (both sockets open, nothing gets through)', () => {
  it('is noticed by the worker\'s own heartbeat timeout; reconnecting within the lease window, it resumes its leases', async () => {
    // A wider lease window (6 s; the worker gives up on silence after half of it) so that a loaded machine
    // cannot make the master give up first: this case is about the worker healing the link in time.
    const cut = await proxiedWorkerHoldingTwo(2, { worker: { heartbeat_failure_threshold: 24 } });
    const [finishesWhileFrozen, finishesAfter] = cut.held;

    cut.proxy.freeze();
    // Its result goes into the frozen link and is lost: the master must not lose the atom with it.
    await releaseAndWaitForEnd(cut, finishesWhileFrozen);
    await eventually('the worker to give up on the silent link and reconnect', () => cut.proxy.acceptedCount === 2, LEASE_WINDOW_MS * 3);
    expect(cut.worker.process.output()).toContain(SILENCE_LOG);

    cut.gates.release([finishesAfter]);
    expect((await waitForBuild(cut.master, cut.buildId)).status).toBe('SUCCESS');
    const outcomes = await expectOneResultPerAtom(cut.master, cut.buildId, 2);
    // Back in time: the lease of the atom still running was resumed (one attempt); the finished one's result
    // was lost in the link, so the master ran that atom again, once.
    expect(outcomes.get(finishesAfter)).toMatchObject({ worker: cut.worker.name, attempts: 1 });
    expect(outcomes.get(finishesWhileFrozen)).toMatchObject({ worker: cut.worker.name, attempts: 2 });
    expect(await eventsOf(cut.master, 'WORKER_LOST')).toEqual([]);
    await expectNoProcessesLeft();
  });

  it('when the worker cannot get back, is noticed by the master too: the atoms run elsewhere, one result each', async () => {
    const cut = await proxiedWorkerHoldingTwo(4);
    const other = await startFaultWorker(cut.master, { name: workerName('direct'), executors: 2 });

    cut.proxy.freeze();
    cut.proxy.refuse();
    // The master's socket stays open and silent: only the missing heartbeats tell it the worker is gone.
    const [lost] = await eventually('the master to declare the silent worker lost', () => lostWorkers(cut.master));
    expect(lost.worker).toBe(cut.worker.name);
    expect(lost.reason).toMatch(/^no heartbeat for \d+ s$/);
    expect((await waitForBuild(cut.master, cut.buildId)).status).toBe('SUCCESS');
    await eventually('the worker to notice the silence itself', () => cut.worker.process.output().includes(SILENCE_LOG));

    cut.proxy.accept();
    await expectNoProcessesLeft(cut.worker.name);
    // Same name, same session: it rejoins under its own id (issue 15 item 4), its old work gone.
    await eventually('the worker to rejoin under its own id', async () =>
      (await workersOf(cut.master)).some((worker) => worker.name === cut.worker.name && worker.is_alive && worker.id === cut.worker.id));
    const outcomes = await expectOneResultPerAtom(cut.master, cut.buildId, 4);
    for (const outcome of outcomes.values()) expect(outcome.worker).toBe(other.name);
    expect([...outcomes.values()].filter((outcome) => outcome.attempts === 2).map((outcome) => outcome.value).sort()).toEqual(cut.held);
    await expectNoProcessesLeft();
  });
});

