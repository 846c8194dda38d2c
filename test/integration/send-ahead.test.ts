/**
 * Send-ahead (issue 18): an executor running a short subjob gets its build's next subjob before the current
 * one ends, and the worker starts it the moment the executor is free, so no executor waits for a round trip
 * to the master between two atoms. Only one waits per executor, only for workers that say they accept it,
 * only for short atoms, and not at a build's tail.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MasterMessage } from '../../shared/protocol.ts';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf, downloadArtifacts } from '../support/build-results.ts';
import { closeAllProtocolClients, connectProtocolClient, type ProtocolClient } from '../support/protocol-client.ts';

afterEach(async () => {
  closeAllProtocolClients();
  await cleanupAll();
});

type RunSubjob = Extract<MasterMessage, { type: 'run_subjob' }>;

async function scriptedWorker(master: { url: string; secret: string }, acceptsQueuedSubjobs: boolean): Promise<ProtocolClient> {
  const worker = connectProtocolClient(master.url, { secret: master.secret });
  await worker.register({ executors: 1, acceptsQueuedSubjobs });
  return worker;
}

function runAtom(worker: ProtocolClient, run: RunSubjob, timeS: number): void {
  const ids = { lease_id: run.lease_id, build_id: run.build_id, subjob_id: run.subjob_id, atom_id: run.atoms[0]!.atom_id };
  worker.sendJson({ type: 'atom_started', ...ids });
  worker.sendJson({ type: 'atom_finished', ...ids, exit_code: 0, time_s: timeS, stop_reason: null, has_artifacts: false });
}

function finishSubjob(worker: ProtocolClient, run: RunSubjob): void {
  worker.sendJson({ type: 'subjob_finished', lease_id: run.lease_id, build_id: run.build_id, subjob_id: run.subjob_id });
}

function runSubjobsReceived(worker: ProtocolClient): number {
  return worker.received.filter((message) => (message as { type?: string }).type === 'run_subjob').length;
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function startBuild(master: { url: string; secret: string }, worker: ProtocolClient, atoms: number): Promise<number> {
  const id = await postBuild(master, {
    type: 'directory', project_directory: tempDir('cr-project-'), config: { commands: ['true'], atomizers: [{ N: `seq 1 ${atoms}` }] },
  });
  const setup = await worker.next('setup_build');
  worker.sendJson({ type: 'setup_finished', build_id: setup.build_id, ok: true, exit_code: 0, output_tail: '' });
  return id;
}

describe('send-ahead', () => {
  it('gives a busy executor its next short subjob before the current one ends, one at a time, and none at the tail', async () => {
    const master = await startTestMaster();
    const worker = await scriptedWorker(master, true);
    const id = await startBuild(master, worker, 4);

    const first = await worker.next('run_subjob');
    runAtom(worker, first, 0.01);
    // The result is in, the subjob not yet ended: the next one comes for the same executor and build slot.
    const second = await worker.next('run_subjob');
    expect([second.executor_index, second.build_executor_index]).toEqual([first.executor_index, first.build_executor_index]);
    expect(second.subjob_id).not.toBe(first.subjob_id);
    // One waits per executor, however long the current one takes to end.
    await pause(300);
    expect(runSubjobsReceived(worker)).toBe(2);

    finishSubjob(worker, first);
    runAtom(worker, second, 0.01);
    const third = await worker.next('run_subjob');
    expect(third.executor_index).toBe(first.executor_index);
    finishSubjob(worker, second);
    runAtom(worker, third, 0.01);
    // The last subjob is the tail (fresh work no more than the executors running the build): it waits for a free executor.
    await pause(300);
    expect(runSubjobsReceived(worker)).toBe(3);
    finishSubjob(worker, third);
    const fourth = await worker.next('run_subjob');
    runAtom(worker, fourth, 0.01);
    finishSubjob(worker, fourth);

    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const atoms = await atomsOf(master, id);
    expect(atoms.map((atom) => [atom.state, atom.attempts])).toEqual(Array.from({ length: 4 }, () => ['COMPLETED', 1]));
  });

  it('sends nothing ahead to a worker that did not say it accepts it, or for atoms of half a second or more', async () => {
    const master = await startTestMaster();
    const plain = await scriptedWorker(master, false);
    await startBuild(master, plain, 6);
    const run = await plain.next('run_subjob');
    runAtom(plain, run, 0.01);
    await pause(400);
    expect(runSubjobsReceived(plain)).toBe(1);
    plain.close();

    const other = await startTestMaster();
    const worker = await scriptedWorker(other, true);
    await startBuild(other, worker, 6);
    const long = await worker.next('run_subjob');
    runAtom(worker, long, 0.8);
    await pause(400);
    expect(runSubjobsReceived(worker)).toBe(1);
  });

  it('sends nothing ahead behind a subjob the timing history knows to take half a second or more', async () => {
    const master = await startTestMaster();
    const worker = connectProtocolClient(master.url, { secret: master.secret });
    await worker.register({ executors: 2, acceptsQueuedSubjobs: true });
    const project = tempDir('cr-project-');
    const config = { commands: ['true'], atomizers: [{ N: 'seq 1 31' }] };
    const timeOf = (run: RunSubjob) => (run.atoms[0]!.env['N'] === '1' ? 8 : 0.3);
    // The first build leaves the history: atom 1 takes 8 s, the 30 others 0.3 s.
    const first = await postBuild(master, { type: 'directory', project_directory: project, config });
    const setup = await worker.next('setup_build');
    worker.sendJson({ type: 'setup_finished', build_id: setup.build_id, ok: true, exit_code: 0, output_tail: '' });
    for (let handled = 0; handled < 31; handled++) {
      const run = await worker.next('run_subjob');
      runAtom(worker, run, timeOf(run));
      finishSubjob(worker, run);
    }
    expect((await waitForBuild(master, first)).status).toBe('SUCCESS');

    // The next: the 8 s atom alone, first; the short ones packed into subjobs of about 2 s.
    await postBuild(master, { type: 'directory', project_directory: project, config });
    const again = await worker.next('setup_build');
    worker.sendJson({ type: 'setup_finished', build_id: again.build_id, ok: true, exit_code: 0, output_tail: '' });
    const long = await worker.next('run_subjob');
    const short = await worker.next('run_subjob');
    expect(long.atoms.map((atom) => atom.env['N'])).toEqual(['1']);
    expect(short.atoms.length).toBeGreaterThan(1);
    // Its short atoms bring the build's recent atom time under half a second; more subjobs wait than executors.
    const ids = { lease_id: short.lease_id, build_id: short.build_id, subjob_id: short.subjob_id };
    for (const atom of short.atoms) {
      worker.sendJson({ type: 'atom_started', ...ids, atom_id: atom.atom_id });
      worker.sendJson({ type: 'atom_finished', ...ids, atom_id: atom.atom_id, exit_code: 0, time_s: 0.3, stop_reason: null, has_artifacts: false });
    }
    await pause(400);
    expect(runSubjobsReceived(worker) - 31).toBe(2);
  });

  it('a subjob sent ahead stops with its build when the build is canceled', async () => {
    const master = await startTestMaster();
    const worker = await scriptedWorker(master, true);
    const id = await startBuild(master, worker, 5);
    const first = await worker.next('run_subjob');
    runAtom(worker, first, 0.01);
    const ahead = await worker.next('run_subjob');
    // The worker is asked to stop the whole build, the subjob waiting on the executor with it.
    expect((await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } })).status).toBe(200);
    await worker.next('cancel_build');
    finishSubjob(worker, first);
    finishSubjob(worker, ahead);
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('CANCELED');
  });

  it('with a real worker: every atom runs once, in its own turn on the executor, with its executor indexes', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const project = tempDir('cr-project-');
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: { commands: ['echo "$N $MACHINE_EXECUTOR_INDEX $BUILD_EXECUTOR_INDEX" >> "$ARTIFACT_DIR/run"', `echo "$N" >> "${join(project, 'ran')}"`], atomizers: [{ N: 'seq 1 40' }] },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const ran = readFileSync(join(project, 'ran'), 'utf8').trim().split('\n').map(Number).sort((a, b) => a - b);
    expect(ran).toEqual(Array.from({ length: 40 }, (_, index) => index + 1));
    const unpacked = await downloadArtifacts(master, id);
    for (let subjob = 0; subjob < 40; subjob++) {
      const [n, machine, build] = readFileSync(join(unpacked, `artifact_${subjob}_0`, 'run'), 'utf8').trim().split(' ').map(Number);
      expect(n).toBe(subjob + 1);
      expect([0, 1]).toContain(machine);
      expect([0, 1]).toContain(build);
    }
    const triggered = (await api(master, 'GET', '/v1/eventlog')).body.events.filter((event: { __tag__: string }) => event.__tag__ === 'MASTER_TRIGGERED_SUBJOB');
    expect(triggered).toHaveLength(40);
    await eventually('the atoms to be listed complete', async () => (await atomsOf(master, id)).every((atom) => atom.state === 'COMPLETED'));
  });
});
