/**
 * Fault suite: what is left running after an atom is stopped, counted. Atoms that ignore SIGTERM, leave a
 * child that ignores it, or escape their process group (setsid, double fork, nohup) are stopped by cancel,
 * by atom_timeout and by a worker's forced stop: the SIGKILL after the grace ends the group, and the
 * per-lease marker in the environment finds the ones that left it. Survivors: zero. And around that, retries
 * run on another worker with every attempt visible, and a result sent after a cancel changes nothing.
 * Each stop path prints `FIGURE survivors <path> <count> of <marked processes before>` to stderr.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, postBuild, startTestMaster, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf, workersOf } from '../support/build-results.ts';
import {
  atomsRunningOn, cleanupFaults, createGates, eventsOf, expectNoProcessesLeft, faultJob, KILL_GRACE_MS, markedProcesses,
  startFaultWorker, workerName,
} from '../support/fault-workers.ts';
import { closeAllProtocolClients, connectProtocolClient } from '../support/protocol-client.ts';

afterEach(async () => {
  closeAllProtocolClients();
  await cleanupAll();
  await cleanupFaults();
});

/**
 * Each atom N is one way of outliving a SIGTERM; it touches READY/N once everything of it runs. Run again
 * (after a worker's forced stop), it finds READY/N and passes at once.
 */
const HOSTILE = [
  ['ignores SIGTERM', 'trap "" TERM; touch "$READY/1"; sleep 60'],
  ['has a child that ignores SIGTERM', 'bash -c \'trap "" TERM; sleep 60\' & touch "$READY/2"; wait'],
  ['starts a setsid process', 'setsid sleep 60 & touch "$READY/3"; sleep 60'],
  ['double-forks', '( ( sleep 60 & ) & ); touch "$READY/4"; sleep 60'],
  ['starts a nohup process', 'nohup sleep 60 >/dev/null 2>&1 & touch "$READY/5"; sleep 60'],
  ['ignores SIGTERM in a setsid process that double-forks', 'setsid bash -c \'trap "" TERM; ( ( sleep 60 & ) & ); sleep 60\' & touch "$READY/6"; sleep 60'],
  // Still starting processes while the worker looks for the escaped ones: one look at /proc is not enough.
  ['starts a setsid process that keeps starting more', 'setsid bash -c \'while :; do sleep 60 & sleep 0.01; done\' & touch "$READY/7"; sleep 60'],
] as const;

function hostileJob(ready: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const cases = HOSTILE.map(([, command], index) => `${index + 1}) ${command} ;;`).join('\n');
  return {
    commands: [
      `export READY=${JSON.stringify(ready)}\n` +
      `if [ -e "$READY/$N" ]; then echo "rerun $N on $FAULT_WORKER"; exit 0; fi\n` +
      `case "$N" in\n${cases}\nesac`,
    ],
    atomizers: [{ N: `seq 1 ${HOSTILE.length}` }],
    ...extra,
  };
}

/** A worker running every hostile atom at once, and the build; resolves when all of them are up. */
async function startHostileBuild(extra: Record<string, unknown> = {}) {
  const master = await startTestMaster();
  const worker = await startFaultWorker(master, { name: workerName('hostile'), executors: HOSTILE.length });
  const ready = tempDir('cr-ready-');
  mkdirSync(ready, { recursive: true });
  const id = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: hostileJob(ready, extra) });
  await eventually('every hostile atom to be up', () => HOSTILE.every((_, index) => existsSync(join(ready, String(index + 1)))));
  const before = markedProcesses(worker.name).length;
  // Every atom has at least its shell and one sleep; escaped ones add theirs.
  expect(before).toBeGreaterThanOrEqual(2 * HOSTILE.length);
  return { master, worker, id, before };
}

/** Time for the stop to end the group, and for its output to reach the worker, on a loaded machine. */
const STOP_MARGIN_MS = 5_000;

/**
 * Waits (up to the kill grace plus a margin) for the worker's marked processes to be gone, prints how many
 * are left either way, then asserts none is.
 */
async function expectNoSurvivors(path: string, before: number, workerNameValue: string): Promise<void> {
  let left: number[] = [];
  try {
    await eventually(`no process of ${workerNameValue} to be left`, () => (left = markedProcesses(workerNameValue)).length === 0, KILL_GRACE_MS + STOP_MARGIN_MS);
  } catch {
    // Reported and asserted below.
  }
  process.stderr.write(`FIGURE survivors ${path} ${left.length} of ${before}\n`);
  expect(left, `processes left after ${path}`).toEqual([]);
}

describe('stopping atoms leaves no process behind', () => {
  it('on cancel', async () => {
    const { master, worker, id, before } = await startHostileBuild();
    expect((await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } })).status).toBe(200);
    await expectNoSurvivors('cancel', before, worker.name);
    expect((await waitForBuild(master, id)).status).toBe('CANCELED');
  });

  it('on atom_timeout: each atom fails with the signal that ended it', async () => {
    const { master, worker, id, before } = await startHostileBuild({ atom_timeout: 2 });
    const build = await waitForBuild(master, id);
    await expectNoSurvivors('atom_timeout', before, worker.name);
    expect(build.status).toBe('FAILURE');
    expect(build.failed_atoms).toHaveLength(HOSTILE.length);
    const atoms = await atomsOf(master, id);
    expect(atoms).toHaveLength(HOSTILE.length);
    for (const atom of atoms) {
      // -15 when SIGTERM ended the shell, -9 when it took the SIGKILL after the grace.
      expect([-15, -9], `atom ${atom.value} (${HOSTILE[Number(atom.value) - 1]![0]})`).toContain(atom.exit_code);
    }
    expect(atoms.find((atom) => atom.value === '1')!.exit_code).toBe(-9);
  });

  it('on a worker\'s forced stop (a second SIGTERM): it exits 0 within the grace, and its atoms run again on the next worker', async () => {
    const { master, worker, id, before } = await startHostileBuild();
    worker.signal('SIGTERM');
    await eventually('the draining worker to leave the list', async () => !(await workersOf(master)).some((listed) => listed.id === worker.id));
    worker.signal('SIGTERM');
    const code = await worker.process.exited;
    await expectNoSurvivors('worker-stop', before, worker.name);
    expect(code).toBe(0);
    // Nothing of theirs was kept: the atoms go back to the queue for the next worker.
    const build = (await api(master, 'GET', `/v1/build/${id}`)).body.build;
    expect(build.status).toBe('BUILDING');
    expect((await atomsOf(master, id)).filter((atom) => atom.state === 'COMPLETED')).toEqual([]);

    const other = await startFaultWorker(master, { name: workerName('other'), executors: HOSTILE.length });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const atoms = await atomsOf(master, id);
    expect(atoms.map((atom) => [atom.value, atom.state, atom.exit_code, atom.attempts, atom.worker]).sort()).toEqual(
      HOSTILE.map((_, index) => [String(index + 1), 'COMPLETED', 0, 2, other.name]));
    await expectNoProcessesLeft();
  });
});

describe('an atom that exits normally', () => {
  it('has what it left running in its process group stopped, even what ignores SIGTERM; the build passes', async () => {
    const master = await startTestMaster();
    const worker = await startFaultWorker(master, { name: workerName('leaver'), executors: 2 });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        commands: ['if [ "$N" = 1 ]; then sleep 600 & else bash -c \'trap "" TERM; sleep 600\' & fi; echo "left one behind"'],
        atomizers: [{ N: 'seq 1 2' }],
      },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    await expectNoProcessesLeft(worker.name, KILL_GRACE_MS + 5_000);
    process.stderr.write(`FIGURE survivors normal-exit ${markedProcesses(worker.name).length}\n`);
  });
});

describe('retries', () => {
  // One atom only: with a second atom keeping the other worker busy at that moment, the retry would run at
  // once on the worker it failed on ("another worker where possible"; the dispatcher does not wait for one).
  it('run a failed atom again on another (idle) worker; the API shows both attempts and the result kept', async () => {
    const master = await startTestMaster();
    const first = await startFaultWorker(master, { name: workerName('first') });
    const second = await startFaultWorker(master, { name: workerName('second') });
    const flags = tempDir('cr-flags-');
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        // The atom fails on its first run only.
        commands: [`if [ ! -e ${JSON.stringify(flags)}/tried ]; then touch ${JSON.stringify(flags)}/tried; echo failing; exit 3; fi; echo "passing on $FAULT_WORKER"`],
        atomizers: [{ N: 'seq 1 1' }],
        retries: 1,
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    const starts = (await eventsOf(master, 'ATOM_START')).filter((event) => event.build_id === id && event.subjob_id === 0);
    expect(starts.map((event) => event.attempt)).toEqual([1, 2]);
    expect(starts[1].worker).not.toBe(starts[0].worker);
    expect([first.name, second.name]).toContain(starts[1].worker);
    const retried = (await atomsOf(master, id)).find((atom) => atom.value === '1')!;
    expect(retried).toMatchObject({ state: 'COMPLETED', exit_code: 0, attempts: 2, worker: starts[1].worker });
    // Only the kept result counts: the failed first attempt is no ATOM_FINISH and no failed atom.
    expect((await eventsOf(master, 'ATOM_FINISH')).filter((event) => event.build_id === id).map((event) => event.exit_code)).toEqual([0]);
    expect(build.failed_atoms).toEqual([]);
    const console = await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/0/console`);
    expect(console.body.content).toBe(`passing on ${starts[1].worker}\n`);
  });
});

describe('a result sent after a cancel', () => {
  it('changes nothing: the build stays CANCELED and no atom turns COMPLETED', async () => {
    const master = await startTestMaster();
    const worker = connectProtocolClient(master.url, { secret: master.secret });
    await worker.register({ executors: 2 });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'), config: { commands: ['true'], atomizers: [{ N: 'seq 1 2' }] },
    });
    const setup = await worker.next('setup_build');
    worker.sendJson({ type: 'setup_finished', build_id: setup.build_id, ok: true, exit_code: 0, output_tail: '' });
    const runs = [await worker.next('run_subjob'), await worker.next('run_subjob')];
    for (const run of runs) worker.sendJson({ type: 'atom_started', lease_id: run.lease_id, build_id: id, subjob_id: run.subjob_id, atom_id: 0 });
    await eventually('both atoms to be running', async () => (await atomsOf(master, id)).every((atom) => atom.state === 'IN_PROGRESS'));

    expect((await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } })).status).toBe(200);
    await worker.next('cancel_build');
    // The worker "did not hear" in time: it reports both atoms passed, with artifacts, as if nothing happened.
    for (const run of runs) {
      const ids = { lease_id: run.lease_id, build_id: id, subjob_id: run.subjob_id };
      worker.sendJson({ type: 'atom_output', ...ids, atom_id: 0, data: 'late output\n' });
      worker.sendJson({ type: 'atom_finished', ...ids, atom_id: 0, exit_code: 0, time_s: 1, stop_reason: null, has_artifacts: false });
      worker.sendJson({ type: 'subjob_finished', ...ids });
    }
    // One ordered connection: once the master acknowledges a heartbeat sent after them, it has dispatched
    // every late message (results on a revoked lease are dropped right there), so the checks below cannot
    // pass merely because the master had not read them yet.
    worker.sendJson({ type: 'heartbeat' });
    await worker.next('heartbeat_ack');
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('CANCELED');
    expect((await atomsOf(master, id)).filter((atom) => atom.state === 'COMPLETED')).toEqual([]);
    expect((await eventsOf(master, 'ATOM_FINISH')).filter((event) => event.build_id === id)).toEqual([]);
    // Still CANCELED a moment later, and the master is fine.
    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build.status).toBe('CANCELED');
  });

  it('from real atoms that pass just as the build is canceled: only results in before the cancel count', async () => {
    const master = await startTestMaster();
    const gates = createGates();
    const worker = await startFaultWorker(master, { name: workerName('racing'), executors: 4, holdAtomsAt: gates.dir });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: faultJob(4, {}, { ignoresSigterm: true }) });
    await eventually('the worker to hold all four atoms', async () => (await atomsRunningOn(master, id, worker.name)).length === 4);

    // Atoms 1-3 pass within ~50 ms (their poll), racing the cancel: their results reach the master before it,
    // or after it, or not at all (the worker drops the result of an atom it was told to stop). Atom 4 holds
    // on, ignoring SIGTERM, so the build cannot pass before the cancel.
    gates.release(['1', '2', '3']);
    expect((await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } })).status).toBe(200);
    // The worker tears down only once its atoms are over, and sends on one ordered connection: when its
    // teardown is logged, every result it sent has been handled.
    await eventually('the worker\'s teardown', async () =>
      (await eventsOf(master, 'BUILD_TEARDOWN_FINISH')).some((event) => event.build_id === id && event.worker === worker.name));
    await expectNoProcessesLeft(worker.name);

    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build.status).toBe('CANCELED');
    const events = (await eventsOf(master)).filter((event) => event.build_id === id);
    const canceledAt = events.findIndex((event) => event.__tag__ === 'BUILD_FINISHED');
    expect(events[canceledAt]).toMatchObject({ status: 'CANCELED' });
    const finishes = events.filter((event) => event.__tag__ === 'ATOM_FINISH');
    // No result logged after the cancel, and the API's COMPLETED atoms are exactly those logged before it.
    expect(events.slice(canceledAt).filter((event) => event.__tag__ === 'ATOM_FINISH')).toEqual([]);
    const completed = (await atomsOf(master, id)).filter((atom) => atom.state === 'COMPLETED');
    expect(completed.map((atom) => atom.subjob_id).sort()).toEqual(finishes.map((event) => event.subjob_id).sort());
    expect(completed.map((atom) => atom.value)).not.toContain('4');
    for (const atom of completed) expect(atom.exit_code).toBe(0);
    process.stderr.write(`FIGURE late-result race: ${completed.length} of 3 passing atoms counted (in before the cancel)\n`);
  });
});
