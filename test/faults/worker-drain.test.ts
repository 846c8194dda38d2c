/**
 * Fault suite: a busy worker asked to leave. Drained (`clusterrunner shutdown -w ID`, or a SIGTERM), it leaves
 * the list at once, finishes what it runs, takes nothing new, tears down and exits 0. A second SIGTERM stops
 * its atoms instead: they run again elsewhere, and the process is gone within the kill grace (plus a margin).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually, waitForBuild } from '../support/cluster.ts';
import { cleanUpFaultsAfterEach, recordingTeardowns, startHeldBuild } from '../support/fault-cluster.ts';
import { atomsOf, runCli, workersOf } from '../support/build-results.ts';
import { clientSetup } from '../cli/helpers.ts';
import {
  KILL_GRACE_MS, expectNoProcessesLeft, expectOneResultPerAtom, 
  markedProcesses, startFaultWorker, workerName,
} from '../support/fault-workers.ts';

cleanUpFaultsAfterEach();

/** Time for a stopped worker to report, close and exit, on top of the kill grace, on a loaded machine. */
const EXIT_MARGIN_MS = 5_000;

describe('a busy worker drained', () => {
  it.each(['clusterrunner shutdown -w ID', 'SIGTERM'])('by %s finishes its atoms, takes nothing new, tears down and exits 0', async (how) => {
    const { master, gates, project, worker: draining, id, held } = await startHeldBuild({ role: 'draining', atoms: 4, job: recordingTeardowns });

    if (how === 'SIGTERM') {
      draining.signal('SIGTERM');
    } else {
      const client = clientSetup(master.secret);
      const run = await runCli(['shutdown', '-m', master.url, '-c', client.conf, '-w', String(draining.id)], { env: client.env });
      expect(run.code, run.stdout + run.stderr).toBe(0);
    }
    await eventually('the worker to leave the list', async () => !(await workersOf(master)).some((worker) => worker.id === draining.id));
    // It still runs what it had.
    expect(markedProcesses(draining.name).length).toBeGreaterThan(0);

    gates.release('all');
    expect(await draining.process.exited).toBe(0);
    expect(readFileSync(join(project, 'teardowns'), 'utf8')).toBe(`${draining.name}\n`);
    // Its executors freed, it took nothing: the two other atoms wait, untouched, for a worker.
    // (Its last results may still be on their way to SQLite when the process has already exited.)
    const waiting = await eventually('the drained worker\'s results to be recorded', async () => {
      const open = (await atomsOf(master, id)).filter((atom) => atom.state !== 'COMPLETED');
      return open.length === 4 - held.length ? open : null;
    });
    expect(waiting.map((atom) => [atom.value, atom.state, atom.attempts]).sort()).toEqual(
      ['1', '2', '3', '4'].filter((value) => !held.includes(value)).map((value) => [value, 'NOT_STARTED', 0]));

    const other = await startFaultWorker(master, { name: workerName('other'), executors: 2 });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const outcomes = await expectOneResultPerAtom(master, id, 4);
    for (const outcome of outcomes.values()) {
      expect(outcome).toEqual({ value: outcome.value, worker: held.includes(outcome.value) ? draining.name : other.name, attempts: 1 });
    }
    await expectNoProcessesLeft();
  });
});

describe('a draining worker given a second SIGTERM', () => {
  it('stops its atoms (even ones ignoring SIGTERM), which run again elsewhere, tears down, and exits within the kill grace', async () => {
    const { master, worker: stopped, id, held, project } = await startHeldBuild({ role: 'stopped', atoms: 2, ignoresSigterm: true, job: recordingTeardowns });
    const other = await startFaultWorker(master, { name: workerName('other'), executors: 2 });

    stopped.signal('SIGTERM');
    await eventually('the worker to leave the list', async () => !(await workersOf(master)).some((worker) => worker.id === stopped.id));
    expect(markedProcesses(stopped.name).length).toBeGreaterThan(0);
    const secondAt = Date.now();
    stopped.signal('SIGTERM');
    const code = await stopped.process.exited;
    const exitMs = Date.now() - secondAt;
    expect(exitMs).toBeLessThan(KILL_GRACE_MS + EXIT_MARGIN_MS);
    expect(code).toBe(0);
    // Its atoms did not outlive it, though they ignored SIGTERM.
    expect(markedProcesses(stopped.name)).toEqual([]);
    // Its setup ran, so its teardown did (the chaos soak found it skipped: a drain that could not end while the
    // master was away, then a second SIGTERM, left the build's setup undone on that machine).
    expect(readFileSync(join(project, 'teardowns'), 'utf8')).toBe(`${stopped.name}\n`);

    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const outcomes = await expectOneResultPerAtom(master, id, 2);
    for (const value of held) expect(outcomes.get(value)).toEqual({ value, worker: other.name, attempts: 2 });
    await expectNoProcessesLeft();
  });
});

describe('a worker given a third SIGTERM while it tears down after the second', () => {
  it('stops the teardown too and exits', async () => {
    const { master, worker: stopped, project } = await startHeldBuild({
      role: 'hurried', atoms: 2,
      job: (dir) => ({ teardown_build: [`echo "$FAULT_WORKER" >> "${join(dir, 'teardowns')}"`, 'sleep 60'] }),
    });
    stopped.signal('SIGTERM');
    // Signals sent back to back may arrive as one.
    await eventually('the worker to leave the list', async () => !(await workersOf(master)).some((worker) => worker.id === stopped.id));
    stopped.signal('SIGTERM');
    await eventually('the teardown to start', () => existsSync(join(project, 'teardowns')));
    const thirdAt = Date.now();
    stopped.signal('SIGTERM');
    expect(await stopped.process.exited).toBe(0);
    expect(Date.now() - thirdAt).toBeLessThan(KILL_GRACE_MS + EXIT_MARGIN_MS);
    await expectNoProcessesLeft(stopped.name);
  });
});
