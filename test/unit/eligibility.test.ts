import { describe, expect, it } from 'vitest';
import {
  acceptsNewWork, carriesLabels, isEligible, judgeHealth, missingLabels,
} from '../../master/scheduling/eligibility.ts';
import { planDispatch, type RunSnapshot, type WorkerSnapshot } from '../../master/scheduling/dispatcher.ts';
import type { WorkItem } from '../../master/model/work-item.ts';
import type { WorkerBuildState } from '../../master/model/worker-build-state.ts';
import { parseJobDefinition } from '../../shared/job-config.ts';
import { heartbeatMessage, registerMessage } from '../../shared/protocol.ts';

const labels = (...names: string[]) => new Set(names);

describe('eligibility (SPEC §13)', () => {
  it('wants every required label, in any order; no requirement takes any worker', () => {
    expect(carriesLabels(labels('linux', 'gpu'), ['gpu', 'linux'])).toBe(true);
    expect(carriesLabels(labels('linux'), ['gpu', 'linux'])).toBe(false);
    expect(carriesLabels(labels(), undefined)).toBe(true);
    expect(carriesLabels(undefined, [])).toBe(true);
    expect(carriesLabels(undefined, ['gpu'])).toBe(false);
    expect(missingLabels(labels('linux'), ['gpu', 'linux', 'arm64'])).toEqual(['gpu', 'arm64']);
  });

  it('gives no new work to an unhealthy worker, and some to a suspect one', () => {
    expect(acceptsNewWork('healthy')).toBe(true);
    expect(acceptsNewWork('suspect')).toBe(true);
    expect(acceptsNewWork('unhealthy')).toBe(false);
    expect(isEligible({ labels: labels('gpu'), health: 'unhealthy' }, ['gpu'])).toBe(false);
    expect(isEligible({ labels: labels('gpu'), health: 'healthy' }, ['gpu'])).toBe(true);
    expect(isEligible({ labels: labels(), health: 'suspect' }, ['gpu'])).toBe(false);
  });

  it('calls a worker suspect when its heartbeats are more than two intervals late', () => {
    const base = { reported: 'healthy' as const, lastSeenMs: 10_000, heartbeatIntervalMs: 1000 };
    expect(judgeHealth({ ...base, nowMs: 12_000 })).toBe('healthy');
    expect(judgeHealth({ ...base, nowMs: 12_001 })).toBe('suspect');
    expect(judgeHealth({ ...base, reported: 'unhealthy', nowMs: 10_000 })).toBe('unhealthy');
  });
});

function worker(id: number, free: number, builds: Record<number, WorkerBuildState>, workerLabels: string[]): WorkerSnapshot {
  return {
    id, isUsable: true, isConnected: true, freeExecutors: free, labels: new Set(workerLabels),
    builds: new Map(Object.entries(builds).map(([key, state]) => [Number(key), state])),
  };
}

function run(id: number, subjobs: number, more: Partial<RunSnapshot> = {}): RunSnapshot {
  const queue: WorkItem[] = Array.from({ length: subjobs }, (_, subjobId) => ({ subjobId, atomIds: [0], avoidWorkerId: null }));
  const front = more.front ?? [];
  return {
    id, maxExecutors: null, maxExecutorsPerWorker: null, executorsInUse: 0, executorsPerWorker: new Map(), front, queue,
    pendingCount: front.length + queue.length, ...more,
  };
}

describe('planDispatch with requires', () => {
  it('sets a build up only on workers carrying every label it requires', () => {
    const plan = planDispatch({
      workers: [worker(1, 2, {}, ['linux']), worker(2, 2, {}, ['linux', 'gpu'])],
      runs: [run(1, 4, { requires: ['gpu', 'linux'] })],
    });
    expect(plan).toEqual([{ kind: 'setup', buildId: 1, workerId: 2 }]);
  });

  it('leaves a build no worker can serve waiting, and serves the next one', () => {
    const plan = planDispatch({
      workers: [worker(1, 2, { 2: 'ready' }, [])],
      runs: [run(1, 4, { requires: ['gpu'] }), run(2, 1)],
    });
    expect(plan.map((step) => `${step.kind}:${step.buildId}@${step.workerId}`)).toEqual(['run:2@1']);
  });

  it('hands a retry to the worker it failed on when the only other worker lacks the labels', () => {
    const retry: WorkItem = { subjobId: 0, atomIds: [0], avoidWorkerId: 1 };
    const plan = planDispatch({
      workers: [worker(1, 1, { 1: 'ready' }, ['gpu']), worker(2, 1, {}, [])],
      runs: [run(1, 0, { front: [retry], requires: ['gpu'] })],
    });
    expect(plan).toEqual([{ kind: 'run', buildId: 1, workerId: 1, item: retry }]);
  });
});

describe('requires and labels at the edges', () => {
  it('reads requires from the job, once per label', () => {
    const job = parseJobDefinition('j', { commands: ['true'], atomizers: [{ X: 'echo 1' }], requires: ['gpu', 'linux', 'gpu'] });
    expect(job.requires).toEqual(['gpu', 'linux']);
    expect(parseJobDefinition('j', { commands: ['true'], atomizers: [{ X: 'echo 1' }] }).requires).toBeUndefined();
  });

  it('refuses requires that is not a list of labels, naming the key', () => {
    for (const requires of ['gpu', [''], ['has space'], [1], Array.from({ length: 33 }, (_, i) => `l${i}`)]) {
      expect(() => parseJobDefinition('j', { commands: ['true'], atomizers: [{ X: 'echo 1' }], requires }))
        .toThrow(/Job "j": "requires" must be a list of at most 32 worker labels/);
    }
  });

  it('takes labels at registration and health figures in heartbeats, all optional', () => {
    expect(heartbeatMessage.safeParse({ type: 'heartbeat' }).success).toBe(true);
    const full = {
      type: 'heartbeat', cpu_count: 8, load1: 0.5, memory_total_bytes: 1e9, memory_available_bytes: 5e8, disk_free_bytes: null,
      health: 'unhealthy', health_reason: 'check failed',
    };
    expect(heartbeatMessage.safeParse(full).success).toBe(true);
    expect(heartbeatMessage.safeParse({ ...full, health: 'suspect' }).success).toBe(false);
    expect(heartbeatMessage.safeParse({ ...full, load1: -1 }).success).toBe(false);
    const register = {
      type: 'register', protocol_version: 2, name: 'w', num_executors: 1, session_id: 's', heartbeat_interval_ms: 1000,
      heartbeat_failure_threshold: 3, resume: null, proof: 'a'.repeat(64),
    };
    expect(registerMessage.safeParse({ ...register, labels: ['gpu', 'os:linux'] }).success).toBe(true);
    expect(registerMessage.safeParse({ ...register, labels: ['bad label'] }).success).toBe(false);
  });
});
