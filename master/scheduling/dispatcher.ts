import type { WorkItem } from '../model/work-item.ts';
import type { WorkerBuildState } from '../model/worker-build-state.ts';
import { carriesLabels } from './eligibility.ts';

/** A worker as the plan sees it. */
export interface WorkerSnapshot {
  readonly id: number;
  /** Alive and not draining: it counts as serving the builds it has set up. */
  readonly isUsable: boolean;
  /** Usable and connected: it may be given new work now (when it has a free executor). */
  readonly isConnected: boolean;
  readonly freeExecutors: number;
  /** Its state for each build it knows (no entry: nothing of that build there). */
  readonly builds: ReadonlyMap<number, WorkerBuildState>;
  /** The labels it carries (SPEC §13); absent: none. */
  readonly labels?: ReadonlySet<string>;
  /** Builds it refused work of lately: neither set up nor given work there until the back-off runs out. */
  readonly heldOff?: ReadonlySet<number>;
}

/** A build ready to run, as the plan sees it. */
export interface RunSnapshot {
  readonly id: number;
  readonly maxExecutors: number | null;
  readonly maxExecutorsPerWorker: number | null;
  readonly executorsInUse: number;
  readonly executorsPerWorker: ReadonlyMap<number, number>;
  /** Requeued work, taken first; an item may prefer to avoid a worker. */
  readonly front: readonly WorkItem[];
  /** The head of the main queue, in order: at most as many items as the plan could hand out. */
  readonly queue: readonly WorkItem[];
  /** All pending items, front and queue (the queue above may be cut short). */
  readonly pendingCount: number;
  /** Labels a worker must carry, every one, to take this build's work (job key requires); absent: none. */
  readonly requires?: readonly string[];
}

export interface DispatchSnapshot {
  readonly workers: readonly WorkerSnapshot[];
  /** Ready builds in the order they are served: higher priority first, then the older build (SPEC §3). */
  readonly runs: readonly RunSnapshot[];
}

export type Assignment =
  /** The worker is to set the build up; no executor is used until it reports back. */
  | { readonly kind: 'setup'; readonly buildId: number; readonly workerId: number }
  /** Lease the item (the very object from the snapshot) to one free executor of the worker. */
  | { readonly kind: 'run'; readonly buildId: number; readonly workerId: number; readonly item: WorkItem };

/** The plan's own counters over a snapshot, which it never changes. */
interface RunPlan {
  readonly run: RunSnapshot;
  executorsInUse: number;
  readonly perWorker: Map<number, number>;
  readonly front: WorkItem[];
  queueHead: number;
}

/**
 * Decides which executor runs what: a pure function of the snapshot. Every worker with a free executor is
 * offered to the ready builds in order; a worker that has not set a build up is asked to (only when the
 * workers already set up cannot take the build's pending work); a worker set up for it takes items while
 * it has free executors and the build's limits allow.
 */
export function planDispatch(snapshot: DispatchSnapshot): Assignment[] {
  const assignments: Assignment[] = [];
  const free = new Map(snapshot.workers.map((worker) => [worker.id, worker.freeExecutors]));
  const setups = new Set<string>();
  const stateOf = (worker: WorkerSnapshot, buildId: number): WorkerBuildState | undefined =>
    setups.has(`${worker.id}/${buildId}`) ? 'setting_up' : worker.builds.get(buildId);
  const isAvailable = (worker: WorkerSnapshot) => worker.isUsable && worker.isConnected && free.get(worker.id)! > 0;
  const plans = snapshot.runs.map((run): RunPlan => ({
    run, executorsInUse: run.executorsInUse, perWorker: new Map(run.executorsPerWorker), front: [...run.front], queueHead: 0,
  }));
  const pendingOf = (plan: RunPlan) => plan.front.length + plan.run.pendingCount - plan.run.front.length - plan.queueHead;
  const hasPending = (plan: RunPlan) => plan.front.length > 0 || plan.queueHead < plan.run.queue.length;

  /** May this build take one more executor on this worker? */
  const wantsExecutor = (plan: RunPlan, workerId: number): boolean => {
    if (!hasPending(plan)) return false;
    if (plan.run.maxExecutors !== null && plan.executorsInUse >= plan.run.maxExecutors) return false;
    return plan.run.maxExecutorsPerWorker === null || (plan.perWorker.get(workerId) ?? 0) < plan.run.maxExecutorsPerWorker;
  };

  const isServing = (worker: WorkerSnapshot, buildId: number) => {
    const state = stateOf(worker, buildId);
    return worker.isUsable && (state === 'ready' || state === 'setting_up');
  };

  /**
   * Setup costs time on a worker (a checkout, an `npm ci`): only bring in another worker when the executors
   * of the workers already set up (or setting up) for this build cannot take its pending work.
   */
  const needsAnotherWorker = (plan: RunPlan): boolean => {
    let capacity = 0;
    const perWorkerLimit = plan.run.maxExecutorsPerWorker ?? Number.POSITIVE_INFINITY;
    for (const worker of snapshot.workers) {
      if (isServing(worker, plan.run.id)) capacity += Math.min(free.get(worker.id)!, perWorkerLimit - (plan.perWorker.get(worker.id) ?? 0));
    }
    const limit = plan.run.maxExecutors ?? Number.POSITIVE_INFINITY;
    return capacity < Math.min(pendingOf(plan), limit - plan.executorsInUse);
  };

  /**
   * A retry would rather run on another worker than the one it failed on. When no other worker is set up
   * for the build, one must be brought in: the worker it failed on passes it over while others are free.
   */
  const retryNeedsAnotherWorker = (plan: RunPlan, candidate: WorkerSnapshot): boolean => {
    for (const item of plan.front) {
      const avoided = item.avoidWorkerId;
      if (avoided === null || avoided === candidate.id) continue;
      if (!snapshot.workers.some((worker) => worker.id !== avoided && isServing(worker, plan.run.id))) return true;
    }
    return false;
  };

  const available = snapshot.workers.filter(isAvailable);
  for (const worker of available) {
    for (const plan of plans) {
      if (!isAvailable(worker)) break;
      if (!wantsExecutor(plan, worker.id) || worker.heldOff?.has(plan.run.id)) continue;
      if (!carriesLabels(worker.labels, plan.run.requires)) continue;
      const state = stateOf(worker, plan.run.id);
      if (state === undefined) {
        if (needsAnotherWorker(plan) || retryNeedsAnotherWorker(plan, worker)) {
          setups.add(`${worker.id}/${plan.run.id}`);
          assignments.push({ kind: 'setup', buildId: plan.run.id, workerId: worker.id });
        }
        continue;
      }
      if (state !== 'ready') continue;
      // Asked only for an item that would rather avoid this worker: the answer costs a look at every worker.
      const eligibleOther = (other: WorkerSnapshot) => other !== worker && !other.heldOff?.has(plan.run.id) &&
        wantsExecutor(plan, other.id) && carriesLabels(other.labels, plan.run.requires);
      let freeNow: boolean | null = null;
      let serving: boolean | null = null;
      const alternatives = {
        freeNow: () => (freeNow ??= available.some((other) => eligibleOther(other) && isAvailable(other) && stateOf(other, plan.run.id) !== 'failed')),
        serving: () => (serving ??= snapshot.workers.some((other) => eligibleOther(other) && other.isConnected && isServing(other, plan.run.id))),
      };
      while (isAvailable(worker) && wantsExecutor(plan, worker.id)) {
        const item = takeItem(plan, worker.id, alternatives);
        if (item === null) break;
        free.set(worker.id, free.get(worker.id)! - 1);
        plan.executorsInUse++;
        plan.perWorker.set(worker.id, (plan.perWorker.get(worker.id) ?? 0) + 1);
        assignments.push({ kind: 'run', buildId: plan.run.id, workerId: worker.id, item });
      }
    }
  }
  return assignments;
}

/**
 * The next item for this worker. A retry that would rather avoid it is left for another worker set up for
 * the build while this one has fresh work to take (a bad host keeps failing what it retries); with nothing
 * else to do it is taken unless another worker is free now: a retry must not wait for ever.
 */
function takeItem(plan: RunPlan, workerId: number, alternatives: { freeNow(): boolean; serving(): boolean }): WorkItem | null {
  const frontIndex = plan.front.findIndex((item) => item.avoidWorkerId !== workerId);
  if (frontIndex >= 0) return plan.front.splice(frontIndex, 1)[0]!;
  const hasFresh = plan.queueHead < plan.run.queue.length;
  if (plan.front.length > 0 && !(hasFresh ? alternatives.serving() : alternatives.freeNow())) return plan.front.shift()!;
  if (hasFresh) return plan.run.queue[plan.queueHead++]!;
  return null;
}
