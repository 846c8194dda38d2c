import type { BuildRun, WorkItem } from '../builds/build-run.ts';
import type { WorkerEntry, WorkerRegistry } from '../workers/worker-registry.ts';

export interface DispatchActions {
  /** The worker is to set the build up; no executor is used until it reports back. */
  startSetup(run: BuildRun, worker: WorkerEntry): void;
  /** Lease the work item to one free executor of the worker. */
  assign(run: BuildRun, worker: WorkerEntry, item: WorkItem): void;
}

/** Higher priority first, then the older build (SPEC §3 priority). */
function runsFirst(a: BuildRun, b: BuildRun): number {
  return b.priority - a.priority || a.id - b.id;
}

/**
 * Decides which executor runs what. Event-driven: every event that may free or need an executor calls
 * schedule(), which coalesces into one pass on the next turn of the event loop. A pass looks only at the
 * workers with a free executor and the builds that are ready; nothing polls.
 */
export class Dispatcher {
  readonly #registry: WorkerRegistry;
  readonly #actions: DispatchActions;
  readonly #runs: BuildRun[] = [];
  #scheduled: NodeJS.Immediate | null = null;

  constructor(registry: WorkerRegistry, actions: DispatchActions) {
    this.#registry = registry;
    this.#actions = actions;
  }

  addRun(run: BuildRun): void {
    if (this.#runs.includes(run)) return;
    const at = this.#runs.findIndex((other) => runsFirst(run, other) < 0);
    if (at < 0) this.#runs.push(run);
    else this.#runs.splice(at, 0, run);
    this.schedule();
  }

  removeRun(run: BuildRun): void {
    const at = this.#runs.indexOf(run);
    if (at >= 0) this.#runs.splice(at, 1);
  }

  get runs(): readonly BuildRun[] {
    return this.#runs;
  }

  schedule(): void {
    this.#scheduled ??= setImmediate(() => {
      this.#scheduled = null;
      this.dispatchNow();
    });
  }

  close(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = null;
  }

  /**
   * Setup costs time on a worker (a checkout, an `npm ci`): only bring in another worker when the executors
   * of the workers already set up (or setting up) for this build cannot take its pending work.
   */
  #needsAnotherWorker(run: BuildRun): boolean {
    let capacity = 0;
    for (const worker of this.#registry.all()) {
      const state = worker.builds.get(run.id);
      if (!worker.isAlive || worker.isDraining || (state !== 'ready' && state !== 'setting_up')) continue;
      const perWorkerLimit = run.job?.maxExecutorsPerWorker ?? Number.POSITIVE_INFINITY;
      capacity += Math.min(worker.freeExecutorCount, perWorkerLimit - (run.executorsPerWorker.get(worker.id) ?? 0));
    }
    const limit = run.job?.maxExecutors ?? Number.POSITIVE_INFINITY;
    return capacity < Math.min(run.pendingCount, limit - run.executorsInUse);
  }

  /**
   * A retry would rather run on another worker than the one it failed on. When no other worker is set up
   * for the build, one must be brought in: the worker it failed on passes it over while others are free.
   */
  #retryNeedsAnotherWorker(run: BuildRun, candidate: WorkerEntry): boolean {
    for (const avoided of run.avoidedWorkerIds()) {
      if (avoided === candidate.id) continue;
      const isServedElsewhere = [...this.#registry.all()].some((worker) => {
        const state = worker.builds.get(run.id);
        return worker.id !== avoided && worker.isAlive && !worker.isDraining && (state === 'ready' || state === 'setting_up');
      });
      if (!isServedElsewhere) return true;
    }
    return false;
  }

  dispatchNow(): void {
    const available = this.#registry.available();
    if (available.length === 0) return;
    for (const worker of available) {
      for (const run of this.#runs) {
        if (!worker.isAvailable) break;
        if (!run.wantsExecutor(worker.id)) continue;
        const state = worker.builds.get(run.id);
        if (state === undefined) {
          if (this.#needsAnotherWorker(run) || this.#retryNeedsAnotherWorker(run, worker)) this.#actions.startSetup(run, worker);
          continue;
        }
        if (state !== 'ready') continue;
        let alternative: boolean | null = null;
        const hasAlternative = () =>
          (alternative ??= available.some((other) => other !== worker && other.builds.get(run.id) !== 'failed' && run.wantsExecutor(other.id)));
        while (worker.isAvailable && run.wantsExecutor(worker.id)) {
          const item = run.takeWork(worker.id, hasAlternative);
          if (item === null) break;
          this.#actions.assign(run, worker, item);
        }
      }
    }
  }
}
