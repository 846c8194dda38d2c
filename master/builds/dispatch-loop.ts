import type { WorkerRegistry } from '../workers/worker-registry.ts';
import { planDispatch, type WorkerSnapshot } from '../scheduling/dispatcher.ts';
import { acceptsNewWork } from '../scheduling/eligibility.ts';
import type { BuildRun } from './build-run.ts';
import type { LeaseBook } from './lease-book.ts';
import type { WorkerSetups } from './worker-setups.ts';

/** Higher priority first, then the older build (SPEC §3 priority). */
function runsFirst(a: BuildRun, b: BuildRun): number {
  return b.priority - a.priority || a.id - b.id;
}

/**
 * The one scheduling point. Anything that may free or need an executor calls schedule(); calls coalesce
 * into one pass on the next turn of the event loop. A pass snapshots the workers and the ready builds,
 * asks the pure planner (scheduling/dispatcher.ts) what to do, and applies it. Nothing polls.
 */
export class DispatchLoop {
  readonly #registry: WorkerRegistry;
  readonly #setups: WorkerSetups;
  readonly #leases: LeaseBook;
  readonly #runs: BuildRun[] = [];
  #scheduled: NodeJS.Immediate | null = null;
  /** Wakes dispatch when the earliest refusal back-off runs out (nothing else may happen meanwhile). */
  #backoffTimer: NodeJS.Timeout | null = null;

  constructor(deps: { registry: WorkerRegistry; setups: WorkerSetups; leases: LeaseBook }) {
    this.#registry = deps.registry;
    this.#setups = deps.setups;
    this.#leases = deps.leases;
  }

  /** The builds ready to run, in the order they are served. */
  get runs(): readonly BuildRun[] {
    return this.#runs;
  }

  add(run: BuildRun): void {
    if (this.#runs.includes(run)) return;
    const at = this.#runs.findIndex((other) => runsFirst(run, other) < 0);
    if (at < 0) this.#runs.push(run);
    else this.#runs.splice(at, 0, run);
    this.schedule();
  }

  remove(run: BuildRun): void {
    const at = this.#runs.indexOf(run);
    if (at >= 0) this.#runs.splice(at, 1);
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
    if (this.#backoffTimer) clearTimeout(this.#backoffTimer);
    this.#backoffTimer = null;
  }

  /** Looks again when a back-off ends; one timer, for the earliest. */
  #wakeAt(untilMs: number): void {
    if (this.#backoffTimer) clearTimeout(this.#backoffTimer);
    this.#backoffTimer = setTimeout(() => {
      this.#backoffTimer = null;
      this.schedule();
    }, Math.max(0, untilMs - Date.now()));
    this.#backoffTimer.unref();
  }

  dispatchNow(): void {
    const workers: WorkerSnapshot[] = [];
    let freeExecutors = 0;
    const now = Date.now();
    let nextWakeMs = Number.POSITIVE_INFINITY;
    for (const worker of this.#registry.all()) {
      if (worker.isAvailable) freeExecutors += worker.freeExecutorCount;
      const heldOff = worker.heldOffBuilds(now);
      for (const buildId of heldOff) nextWakeMs = Math.min(nextWakeMs, worker.refusals.get(buildId)!.untilMs);
      workers.push({
        // An unhealthy worker (SPEC §13) serves nothing new: not even the builds it has set up.
        id: worker.id, isUsable: worker.isAlive && !worker.isDraining && acceptsNewWork(worker.health()) && worker.failureSuspicion === null, isConnected: worker.isConnected,
        labels: worker.labels,
        freeExecutors: worker.freeExecutorCount, builds: worker.builds, heldOff,
      });
    }
    if (nextWakeMs !== Number.POSITIVE_INFINITY) this.#wakeAt(nextWakeMs);
    if (freeExecutors === 0) return;
    const runs = this.#runs.filter((run) => run.phase === 'ready' && run.job !== null && run.hasPendingWork);
    const plan = planDispatch({ workers, runs: runs.map((run) => ({ ...run.dispatchSnapshot(freeExecutors), requires: run.job?.requires })) });
    const byId = new Map(runs.map((run) => [run.id, run]));
    for (const step of plan) {
      const run = byId.get(step.buildId)!;
      const worker = this.#registry.get(step.workerId)!;
      if (step.kind === 'setup') {
        this.#setups.startSetup(run, worker);
      } else {
        run.removePending(step.item);
        this.#leases.create(run, worker, step.item);
      }
    }
  }
}
