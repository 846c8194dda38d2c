import { describe, expect, it } from 'vitest';
import { BuildRun } from '../../master/builds/build-run.ts';
import type { BuildRequest } from '../../master/builds/build-request.ts';
import type { StoredJob } from '../../master/store/build-store.ts';

const REQUEST = { type: 'directory', projectDirectory: '/p' } as BuildRequest;
const JOB: StoredJob = { project: { type: 'directory', path: '/p' }, remoteFiles: {}, timingKey: 'k', name: 'j', command: 'true', setupCommand: null, teardownCommand: null, maxExecutors: null, maxExecutorsPerWorker: null, atomTimeoutMs: null, retries: 0 };

function run(subjobs: number, atomsEach = 1, job: Partial<StoredJob> = {}): BuildRun {
  const r = new BuildRun(1, 0, REQUEST);
  r.job = { ...JOB, ...job };
  r.load(Array.from({ length: subjobs }, (_, id) => ({
    id,
    atoms: Array.from({ length: atomsEach }, (_, atomId) => ({ id: atomId, variable: 'X', value: `${id}.${atomId}`, isComplete: false })),
  })));
  r.phase = 'ready';
  return r;
}

describe('a build run', () => {
  it('hands out subjobs in order and requeued work first', () => {
    const r = run(3);
    expect(r.takeWork(1, false)?.subjobId).toBe(0);
    r.requeueFront({ subjobId: 0, atomIds: [0], avoidWorkerId: null });
    expect(r.takeWork(1, false)?.subjobId).toBe(0);
    expect(r.takeWork(1, false)?.subjobId).toBe(1);
    expect(r.takeWork(1, false)?.subjobId).toBe(2);
    expect(r.takeWork(1, false)).toBeNull();
    expect(r.hasPendingWork).toBe(false);
  });

  it('keeps a retry away from the worker it failed on while another could take it', () => {
    const r = run(0);
    r.requeueFront({ subjobId: 4, atomIds: [0], avoidWorkerId: 7 });
    expect(r.takeWork(7, true)).toBeNull();
    expect(r.takeWork(7, false)?.subjobId).toBe(4);
  });

  it('honours max_executors and max_executors_per_worker', () => {
    const r = run(10, 1, { maxExecutors: 3, maxExecutorsPerWorker: 2 });
    r.takeBuildExecutor(1);
    r.takeBuildExecutor(1);
    expect(r.wantsExecutor(1)).toBe(false);
    expect(r.wantsExecutor(2)).toBe(true);
    r.takeBuildExecutor(2);
    expect(r.wantsExecutor(2)).toBe(false);
    expect(r.wantsExecutor()).toBe(false);
  });

  it('gives the lowest free BUILD_EXECUTOR_INDEX back out', () => {
    const r = run(5);
    expect([r.takeBuildExecutor(1), r.takeBuildExecutor(1), r.takeBuildExecutor(2)]).toEqual([0, 1, 2]);
    r.releaseBuildExecutor(1, 1);
    r.releaseBuildExecutor(1, 0);
    expect(r.takeBuildExecutor(2)).toBe(0);
    expect(r.executorsInUse).toBe(2);
  });

  it('counts subjobs complete when their last atom is', () => {
    const r = run(2, 2);
    expect(r.remainingAtoms).toBe(4);
    expect(r.completeAtom(0, 0)).toBe(false);
    expect(r.completeAtom(0, 1)).toBe(true);
    expect(r.completedSubjobs).toBe(1);
    expect(r.remainingAtoms).toBe(2);
  });

  it('skips finished atoms when loaded again after a restart', () => {
    const r = new BuildRun(1, 0, REQUEST);
    r.job = JOB;
    r.load([
      { id: 0, atoms: [{ id: 0, variable: 'X', value: 'a', isComplete: true }] },
      { id: 1, atoms: [{ id: 0, variable: 'X', value: 'b', isComplete: true }, { id: 1, variable: 'X', value: 'c', isComplete: false }] },
    ]);
    r.phase = 'ready';
    expect(r.completedSubjobs).toBe(1);
    expect(r.remainingAtoms).toBe(1);
    expect(r.takeWork(1, false)).toEqual({ subjobId: 1, atomIds: [1], avoidWorkerId: null });
  });

  it('is not dispatchable before it is ready', () => {
    const r = run(1);
    r.phase = 'preparing';
    expect(r.wantsExecutor()).toBe(false);
  });
});
