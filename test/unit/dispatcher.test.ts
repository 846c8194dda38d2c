import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { Dispatcher } from '../../master/scheduling/dispatcher.ts';
import { BuildRun, type WorkItem } from '../../master/builds/build-run.ts';
import { WorkerEntry, WorkerRegistry } from '../../master/workers/worker-registry.ts';
import type { BuildRequest } from '../../master/builds/build-request.ts';
import type { StoredJob } from '../../master/store/build-store.ts';

const openSocket = { readyState: 1, OPEN: 1, send: () => undefined } as unknown as WebSocket;

function worker(id: number, executors: number): WorkerEntry {
  return new WorkerEntry({ id, name: `w${id}`, sessionId: `s${id}`, numExecutors: executors, heartbeatIntervalMs: 1000, heartbeatFailureThreshold: 3, socket: openSocket });
}

function run(id: number, subjobs: number, priority = 0, job: Partial<StoredJob> = {}): BuildRun {
  const r = new BuildRun(id, priority, { type: 'directory' } as BuildRequest);
  r.job = { project: { type: 'directory', path: '/p' }, remoteFiles: {}, timingKey: 'k', name: 'j', command: 'true', setupCommand: null, teardownCommand: null, maxExecutors: null, maxExecutorsPerWorker: null, atomTimeoutMs: null, retries: 0, ...job };
  r.load(Array.from({ length: subjobs }, (_, sid) => ({ id: sid, atoms: [{ id: 0, variable: 'X', value: String(sid), isComplete: false }] })));
  r.phase = 'ready';
  return r;
}

/** A dispatcher whose actions behave like the build manager's, recording what was decided. */
function harness(workers: WorkerEntry[]) {
  const registry = new WorkerRegistry();
  for (const w of workers) registry.add(w);
  const setups: string[] = [];
  const assigned: { build: number; worker: number; item: WorkItem }[] = [];
  const dispatcher = new Dispatcher(registry, {
    startSetup: (r, w) => {
      setups.push(`${r.id}@${w.id}`);
      w.builds.set(r.id, 'ready');
    },
    assign: (r, w, item) => {
      w.takeExecutor();
      r.takeBuildExecutor(w.id);
      assigned.push({ build: r.id, worker: w.id, item });
    },
  });
  return { dispatcher, setups, assigned };
}

describe('dispatcher', () => {
  it('sets a build up on a worker before giving it work there', () => {
    const w = worker(1, 2);
    const { dispatcher, setups, assigned } = harness([w]);
    const r = run(1, 3);
    dispatcher.addRun(r);
    dispatcher.dispatchNow();
    expect(setups).toEqual(['1@1']);
    dispatcher.dispatchNow();
    expect(assigned.map((a) => a.item.subjobId)).toEqual([0, 1]);
    expect(w.freeExecutorCount).toBe(0);
  });

  it('serves higher priority first, then the older build', () => {
    const w = worker(1, 3);
    w.builds.set(1, 'ready');
    w.builds.set(2, 'ready');
    w.builds.set(3, 'ready');
    const { dispatcher, assigned } = harness([w]);
    dispatcher.addRun(run(1, 5, 0));
    dispatcher.addRun(run(3, 1, 5));
    dispatcher.addRun(run(2, 1, 5));
    dispatcher.dispatchNow();
    expect(assigned.map((a) => a.build)).toEqual([2, 3, 1]);
  });

  it('honours max_executors across workers and hands the rest to the next build', () => {
    const a = worker(1, 2);
    const b = worker(2, 2);
    for (const w of [a, b]) {
      w.builds.set(1, 'ready');
      w.builds.set(2, 'ready');
    }
    const { dispatcher, assigned } = harness([a, b]);
    dispatcher.addRun(run(1, 10, 1, { maxExecutors: 3 }));
    dispatcher.addRun(run(2, 10, 0));
    dispatcher.dispatchNow();
    expect(assigned.filter((x) => x.build === 1)).toHaveLength(3);
    expect(assigned.filter((x) => x.build === 2)).toHaveLength(1);
  });

  it('honours max_executors_per_worker', () => {
    const a = worker(1, 4);
    a.builds.set(1, 'ready');
    const { dispatcher, assigned } = harness([a]);
    dispatcher.addRun(run(1, 10, 0, { maxExecutorsPerWorker: 2 }));
    dispatcher.dispatchNow();
    expect(assigned).toHaveLength(2);
  });

  it('gives nothing to a draining worker or one whose setup failed', () => {
    const draining = worker(1, 2);
    draining.builds.set(1, 'ready');
    draining.isDraining = true;
    const failed = worker(2, 2);
    failed.builds.set(1, 'failed');
    const { dispatcher, assigned, setups } = harness([draining, failed]);
    dispatcher.addRun(run(1, 4));
    dispatcher.dispatchNow();
    expect(assigned).toHaveLength(0);
    expect(setups).toHaveLength(0);
  });

  it('stops dispatching a removed build', () => {
    const w = worker(1, 2);
    w.builds.set(1, 'ready');
    const { dispatcher, assigned } = harness([w]);
    const r = run(1, 4);
    dispatcher.addRun(r);
    dispatcher.removeRun(r);
    dispatcher.dispatchNow();
    expect(assigned).toHaveLength(0);
  });
});

describe('dispatcher setup decisions', () => {
  it('brings in another worker only when the ones set up cannot take the pending work', () => {
    const a = worker(1, 4);
    const b = worker(2, 4);
    const { dispatcher, setups } = harness([a, b]);
    dispatcher.addRun(run(1, 2));
    dispatcher.dispatchNow();
    expect(setups).toEqual(['1@1']);
  });

  it('sets up as many workers as the work needs', () => {
    const workers = [worker(1, 2), worker(2, 2), worker(3, 2)];
    const { dispatcher, setups } = harness(workers);
    dispatcher.addRun(run(1, 3));
    dispatcher.dispatchNow();
    expect(setups).toEqual(['1@1', '1@2']);
  });

  it('does not set up workers that max_executors would leave idle', () => {
    const workers = [worker(1, 2), worker(2, 2), worker(3, 2)];
    const { dispatcher, setups } = harness(workers);
    dispatcher.addRun(run(1, 10, 0, { maxExecutors: 2 }));
    dispatcher.dispatchNow();
    expect(setups).toEqual(['1@1']);
  });

  it('sets up another worker for a retry when the worker it failed on is the only one set up', () => {
    const failedOn = worker(1, 1);
    const other = worker(2, 1);
    failedOn.builds.set(1, 'ready');
    const { dispatcher, setups, assigned } = harness([failedOn, other]);
    const r = run(1, 1);
    r.takeWork(failedOn.id, false);
    // The other worker finished its share and was torn down before the atom failed here.
    r.requeueFront({ subjobId: 0, atomIds: [0], avoidWorkerId: failedOn.id });
    dispatcher.addRun(r);
    dispatcher.dispatchNow();
    expect(setups).toEqual(['1@2']);
    dispatcher.dispatchNow();
    expect(assigned.map((a) => a.worker)).toEqual([other.id]);
  });

  it('runs a retry on the worker it failed on when no other can take it', () => {
    const failedOn = worker(1, 1);
    const busy = worker(2, 1);
    failedOn.builds.set(1, 'ready');
    busy.takeExecutor();
    const { dispatcher, assigned } = harness([failedOn, busy]);
    const r = run(1, 1);
    r.takeWork(failedOn.id, false);
    r.requeueFront({ subjobId: 0, atomIds: [0], avoidWorkerId: failedOn.id });
    dispatcher.addRun(r);
    dispatcher.dispatchNow();
    expect(assigned.map((a) => a.worker)).toEqual([failedOn.id]);
  });
});
