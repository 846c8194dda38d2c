import { describe, expect, it } from 'vitest';
import { planDispatch, type RunSnapshot, type WorkerSnapshot } from '../../master/scheduling/dispatcher.ts';
import type { WorkItem } from '../../master/model/work-item.ts';
import type { WorkerBuildState } from '../../master/model/worker-build-state.ts';

/** A connected, usable worker with this many free executors and these build states. */
function worker(id: number, freeExecutors: number, builds: Record<number, WorkerBuildState> = {}, more: Partial<WorkerSnapshot> = {}): WorkerSnapshot {
  return { id, isUsable: true, isConnected: true, freeExecutors, builds: new Map(Object.entries(builds).map(([k, v]) => [Number(k), v])), ...more };
}

/** A ready build with `subjobs` one-atom subjobs queued. */
function run(id: number, subjobs: number, more: Partial<RunSnapshot> = {}): RunSnapshot {
  const queue: WorkItem[] = Array.from({ length: subjobs }, (_, subjobId) => ({ subjobId, atomIds: [0], avoidWorkerId: null }));
  const front = more.front ?? [];
  return {
    id, maxExecutors: null, maxExecutorsPerWorker: null, executorsInUse: 0, executorsPerWorker: new Map(), front, queue,
    pendingCount: front.length + queue.length, ...more,
  };
}

const setups = (plan: ReturnType<typeof planDispatch>) => plan.filter((a) => a.kind === 'setup').map((a) => `${a.buildId}@${a.workerId}`);
const runs = (plan: ReturnType<typeof planDispatch>) =>
  plan.flatMap((a) => (a.kind === 'run' ? [{ build: a.buildId, worker: a.workerId, subjob: a.item.subjobId }] : []));

describe('planDispatch', () => {
  it('sets a build up on a worker before giving it work there', () => {
    expect(planDispatch({ workers: [worker(1, 2)], runs: [run(1, 3)] })).toEqual([{ kind: 'setup', buildId: 1, workerId: 1 }]);
    const plan = planDispatch({ workers: [worker(1, 2, { 1: 'ready' })], runs: [run(1, 3)] });
    expect(runs(plan)).toEqual([{ build: 1, worker: 1, subjob: 0 }, { build: 1, worker: 1, subjob: 1 }]);
  });

  it('hands out the very items of the snapshot, requeued work first', () => {
    const retry: WorkItem = { subjobId: 9, atomIds: [3], avoidWorkerId: null };
    const snapshot = run(1, 2, { front: [retry] });
    const plan = planDispatch({ workers: [worker(1, 2, { 1: 'ready' })], runs: [snapshot] });
    expect(plan.map((a) => (a.kind === 'run' ? a.item : null))).toEqual([retry, snapshot.queue[0]]);
    expect((plan[0] as { item: WorkItem }).item).toBe(retry);
  });

  it('serves the builds in the order given (higher priority first, then the older build)', () => {
    const plan = planDispatch({ workers: [worker(1, 3, { 1: 'ready', 2: 'ready', 3: 'ready' })], runs: [run(2, 1), run(3, 1), run(1, 5)] });
    expect(runs(plan).map((a) => a.build)).toEqual([2, 3, 1]);
  });

  it('honours max_executors across workers and hands the rest to the next build', () => {
    const both = { 1: 'ready', 2: 'ready' } as const;
    const plan = planDispatch({ workers: [worker(1, 2, both), worker(2, 2, both)], runs: [run(1, 10, { maxExecutors: 3 }), run(2, 10)] });
    expect(runs(plan).filter((a) => a.build === 1)).toHaveLength(3);
    expect(runs(plan).filter((a) => a.build === 2)).toHaveLength(1);
  });

  it('counts executors the build already uses', () => {
    const plan = planDispatch({
      workers: [worker(1, 4, { 1: 'ready' })],
      runs: [run(1, 10, { maxExecutors: 3, maxExecutorsPerWorker: 2, executorsInUse: 2, executorsPerWorker: new Map([[1, 1]]) })],
    });
    expect(runs(plan)).toHaveLength(1);
  });

  it('honours max_executors_per_worker', () => {
    const plan = planDispatch({ workers: [worker(1, 4, { 1: 'ready' })], runs: [run(1, 10, { maxExecutorsPerWorker: 2 })] });
    expect(runs(plan)).toHaveLength(2);
  });

  it('gives nothing to a draining or disconnected worker, or one whose setup failed or is tearing down', () => {
    const plan = planDispatch({
      workers: [
        worker(1, 2, { 1: 'ready' }, { isUsable: false }),
        worker(2, 2, { 1: 'failed' }),
        worker(3, 2, { 1: 'ready' }, { isConnected: false }),
        worker(4, 2, { 1: 'tearing_down' }),
      ],
      runs: [run(1, 4)],
    });
    expect(plan).toEqual([]);
  });

  it('plans nothing without pending work or free executors', () => {
    expect(planDispatch({ workers: [worker(1, 2, { 1: 'ready' })], runs: [run(1, 0)] })).toEqual([]);
    expect(planDispatch({ workers: [worker(1, 0, { 1: 'ready' })], runs: [run(1, 3)] })).toEqual([]);
  });
});

describe('planDispatch setup decisions', () => {
  it('brings in another worker only when the ones set up cannot take the pending work', () => {
    expect(setups(planDispatch({ workers: [worker(1, 4), worker(2, 4)], runs: [run(1, 2)] }))).toEqual(['1@1']);
  });

  it('counts a worker still setting up as serving the build', () => {
    expect(setups(planDispatch({ workers: [worker(1, 4, { 1: 'setting_up' }), worker(2, 4)], runs: [run(1, 2)] }))).toEqual([]);
  });

  it('sets up as many workers as the work needs', () => {
    expect(setups(planDispatch({ workers: [worker(1, 2), worker(2, 2), worker(3, 2)], runs: [run(1, 3)] }))).toEqual(['1@1', '1@2']);
  });

  it('does not set up workers that max_executors would leave idle', () => {
    expect(setups(planDispatch({ workers: [worker(1, 2), worker(2, 2), worker(3, 2)], runs: [run(1, 10, { maxExecutors: 2 })] }))).toEqual(['1@1']);
  });

  it('sets up another worker for a retry when the worker it failed on is the only one set up', () => {
    const retry = { subjobId: 0, atomIds: [0], avoidWorkerId: 1 };
    const snapshot = { workers: [worker(1, 1, { 1: 'ready' }), worker(2, 1)], runs: [run(1, 0, { front: [retry], pendingCount: 1 })] };
    expect(planDispatch(snapshot)).toEqual([{ kind: 'setup', buildId: 1, workerId: 2 }]);
    // Once the other worker is set up, the retry goes there.
    const later = { workers: [worker(1, 1, { 1: 'ready' }), worker(2, 1, { 1: 'ready' })], runs: snapshot.runs };
    expect(runs(planDispatch(later))).toEqual([{ build: 1, worker: 2, subjob: 0 }]);
  });

  it('leaves a retry for another worker set up for the build, though busy, while the one it failed on has fresh work', () => {
    const retry = { subjobId: 0, atomIds: [0], avoidWorkerId: 1 };
    const fresh = { subjobId: 1, atomIds: [0], avoidWorkerId: null };
    const workers = [worker(1, 1, { 1: 'ready' }), worker(2, 0, { 1: 'ready' })];
    expect(runs(planDispatch({ workers, runs: [run(1, 0, { front: [retry], queue: [fresh], pendingCount: 2 })] })))
      .toEqual([{ build: 1, worker: 1, subjob: 1 }]);
    // With nothing else to do and the other worker busy, the retry runs where it failed rather than wait.
    expect(runs(planDispatch({ workers, runs: [run(1, 0, { front: [retry], pendingCount: 1 })] }))).toEqual([{ build: 1, worker: 1, subjob: 0 }]);
  });

  it('runs a retry on the worker it failed on when no other can take it', () => {
    const retry = { subjobId: 0, atomIds: [0], avoidWorkerId: 1 };
    const plan = planDispatch({ workers: [worker(1, 1, { 1: 'ready' }), worker(2, 0)], runs: [run(1, 0, { front: [retry], pendingCount: 1 })] });
    expect(runs(plan)).toEqual([{ build: 1, worker: 1, subjob: 0 }]);
  });
});
