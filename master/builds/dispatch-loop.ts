import type { Lease, WorkerEntry, WorkerRegistry } from '../workers/worker-registry.ts';
import { planDispatch, type WorkerSnapshot } from '../scheduling/dispatcher.ts';
import { acceptsNewWork } from '../scheduling/eligibility.ts';
import type { BuildRun } from './build-run.ts';
import type { LeaseBook } from './lease-book.ts';
import type { WorkerSetups } from './worker-setups.ts';

/**
 * Send-ahead (issue 18): an executor running a subjob of a build whose atoms take less than this gets that
 * build's next subjob before the current one ends, so it never waits for a round trip to the master. Longer
 * atoms gain little from it and would make work wait behind them.
 */
const SEND_AHEAD_MAX_ATOM_SECONDS = 0.5;

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
    if (freeExecutors > 0) this.#plan(workers, freeExecutors);
    this.#sendAhead(now);
  }

  #plan(workers: WorkerSnapshot[], freeExecutors: number): void {
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

  /**
   * After the plan, work still pending has no free executor: an executor running a short subjob of the build
   * (on a worker that accepts it) gets the build's next one now. Only while the build's fresh work outnumbers
   * the executors running it: at the tail, what is left goes to whichever executor frees first. Requeued work
   * is left to the plan, which knows which worker it would rather avoid.
   */
  #sendAhead(nowMs: number): void {
    for (const run of this.#runs) {
      const recent = run.recentAtomSeconds;
      if (run.phase !== 'ready' || run.job === null || recent === null || recent >= SEND_AHEAD_MAX_ATOM_SECONDS) continue;
      if (run.freshCount === 0) continue;
      let executorsRunning = 0;
      const behind: { worker: WorkerEntry; lease: Lease }[] = [];
      for (const workerId of run.executorsPerWorker.keys()) {
        const worker = this.#registry.get(workerId);
        if (worker === undefined) continue;
        executorsRunning += worker.numExecutors;
        const usable = worker.acceptsQueuedSubjobs && worker.isAlive && !worker.isDraining && worker.isConnected &&
          worker.failureSuspicion === null && acceptsNewWork(worker.health(nowMs)) && !worker.heldOffBuilds(nowMs).has(run.id);
        if (!usable) continue;
        for (const lease of worker.leases.values()) {
          if (lease.buildId !== run.id || lease.isRevoked || worker.leasesOn(lease.executorIndex) !== 1) continue;
          // Never behind a subjob the plan knows to be long: the one sent ahead would wait there while other
          // executors free up (the skewed bench's 8 s atoms among 0.2 s ones).
          const expected = run.expectedSecondsOf(lease.subjobId);
          if (expected === null || expected < SEND_AHEAD_MAX_ATOM_SECONDS) behind.push({ worker, lease });
        }
      }
      for (const { worker, lease } of behind) {
        if (run.freshCount <= executorsRunning) break;
        const item = run.takeFreshItem();
        if (item === null) break;
        this.#leases.createAhead(run, worker, item, lease);
      }
    }
  }
}
