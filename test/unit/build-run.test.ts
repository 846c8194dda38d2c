import { describe, expect, it } from 'vitest';
import { BuildRun } from '../../master/builds/build-run.ts';
import type { BuildRequest } from '../../master/builds/build-request.ts';
import type { StoredJob } from '../../master/model/stored-job.ts';

const REQUEST = { type: 'directory', projectDirectory: '/p' } as BuildRequest;
const JOB: StoredJob = { project: { type: 'directory', path: '/p' }, remoteFiles: {}, timingKey: 'k', name: 'j', command: 'true', setupCommand: null, teardownCommand: null, maxExecutors: null, maxExecutorsPerWorker: null, atomTimeoutMs: null, retries: 0 };

function run(subjobs: number, atomsEach = 1, job: Partial<StoredJob> = {}): BuildRun {
  const r = new BuildRun(1, 0, REQUEST);
  r.job = { ...JOB, ...job };
  r.load(Array.from({ length: subjobs }, (_, id) => ({
    id,
    atoms: Array.from({ length: atomsEach }, (_, atomId) => ({ id: atomId, variable: 'X', value: `${id}.${atomId}`, isComplete: false })),
  })));
  r.enterPhase('ready');
  return r;
}

describe('a build run', () => {
  it('offers the front (requeued work) and the head of the queue, and takes planned items out', () => {
    const r = run(3);
    const first = r.dispatchSnapshot(10);
    expect(first.queue.map((item) => item.subjobId)).toEqual([0, 1, 2]);
    expect(r.dispatchSnapshot(2).queue).toHaveLength(2);
    r.removePending(first.queue[0]!);
    r.requeueFront({ subjobId: 0, atomIds: [0], avoidWorkerId: null });
    const second = r.dispatchSnapshot(10);
    expect(second.front.map((item) => item.subjobId)).toEqual([0]);
    expect(second.queue.map((item) => item.subjobId)).toEqual([1, 2]);
    expect(second.pendingCount).toBe(3);
    r.removePending(second.front[0]!);
    r.removePending(second.queue[0]!);
    r.removePending(second.queue[1]!);
    expect(r.hasPendingWork).toBe(false);
  });

  it('refuses to take an item that is not next in its queue', () => {
    const r = run(3);
    expect(() => r.removePending(r.dispatchSnapshot(3).queue[1]!)).toThrow('not at the head');
  });

  it('moves between phases only along model/run-phase.ts', () => {
    const r = run(1);
    expect(() => r.enterPhase('preparing')).toThrow('cannot move from ready to preparing');
    r.enterPhase('finishing');
    expect(r.phase).toBe('finishing');
  });

  it('gives the lowest free BUILD_EXECUTOR_INDEX back out', () => {
    const r = run(5);
    expect([r.takeBuildExecutor(1), r.takeBuildExecutor(1), r.takeBuildExecutor(2)]).toEqual([0, 1, 2]);
    r.releaseBuildExecutor(1, 1);
    r.releaseBuildExecutor(1, 0);
    expect(r.takeBuildExecutor(2)).toBe(0);
    expect(r.executorsInUse).toBe(2);
  });

  it('hands out freed BUILD_EXECUTOR_INDEX values lowest first, whatever order they were freed in', () => {
    const r = run(5);
    const taken = Array.from({ length: 50 }, () => r.takeBuildExecutor(1));
    const freed = [37, 3, 49, 0, 12, 25, 8, 41, 19, 30];
    for (const index of freed) r.releaseBuildExecutor(1, index);
    r.holdBuildExecutor(12); // a lease that may resume after a restart keeps its index
    const again = Array.from({ length: 10 }, () => r.takeBuildExecutor(1));
    expect(taken).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(again).toEqual([0, 3, 8, 19, 25, 30, 37, 41, 49, 50]);
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
    r.enterPhase('ready');
    expect(r.completedSubjobs).toBe(1);
    expect(r.remainingAtoms).toBe(1);
    expect(r.dispatchSnapshot(5).queue).toEqual([{ subjobId: 1, atomIds: [1], avoidWorkerId: null }]);
  });
});
