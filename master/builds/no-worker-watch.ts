import type { Logger } from '../../shared/log.ts';
import { carriesLabels } from '../scheduling/eligibility.ts';
import type { Store } from '../store/index.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import type { BuildRun } from './build-run.ts';

/** What the build view shows while a build waits for a worker it can run on (BuildView.waiting_for_workers). */
export interface WaitingForWorkers {
  readonly since: number;
  readonly gives_up_at: number | null;
  /** The job's `requires` when workers are connected but none carries every label (SPEC §13). */
  readonly requires?: readonly string[];
}

interface Wait {
  readonly sinceMs: number;
  readonly timer: NodeJS.Timeout | null;
}

/**
 * Builds wait for workers, but not for ever: a ready build that no connected worker can serve (none at all,
 * or none carrying every label its job `requires`) for no_worker_timeout_seconds errors out (0 waits for
 * ever). Each build has its own clock: a worker that connects stops the clocks of the builds it can serve.
 * An unhealthy worker still counts as one that can serve: it is out of rotation for a while, not for good.
 */
export class NoWorkerWatch {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #registry: WorkerRegistry;
  readonly #timeoutMs: number;
  readonly #readyRuns: () => readonly BuildRun[];
  readonly #giveUp: (run: BuildRun, errorText: string) => void;
  /** The ready builds no worker can serve now, by build id; bounded by the builds the master holds. */
  readonly #waits = new Map<number, Wait>();

  constructor(deps: {
    store: Store; log: Logger; registry: WorkerRegistry; noWorkerTimeoutMs: number; readyRuns: () => readonly BuildRun[];
    giveUp: (run: BuildRun, errorText: string) => void;
  }) {
    this.#store = deps.store;
    this.#log = deps.log;
    this.#registry = deps.registry;
    this.#timeoutMs = deps.noWorkerTimeoutMs;
    this.#readyRuns = deps.readyRuns;
    this.#giveUp = deps.giveUp;
  }

  /** Looks again: after a worker came or went, or a build became ready. */
  check(): void {
    const waiting = new Set<number>();
    for (const run of this.#readyRuns()) {
      if (run.phase !== 'ready' || this.#canBeServed(run)) continue;
      waiting.add(run.id);
      if (!this.#waits.has(run.id)) this.#startWait(run);
    }
    for (const [buildId, wait] of this.#waits) {
      if (waiting.has(buildId)) continue;
      if (wait.timer) clearTimeout(wait.timer);
      this.#waits.delete(buildId);
    }
  }

  /** Some live worker, not draining, carries every label the build requires. */
  #canBeServed(run: BuildRun): boolean {
    const requires = run.job?.requires;
    return [...this.#registry.all()].some((worker) => worker.isAlive && !worker.isDraining && carriesLabels(worker.labels, requires));
  }

  #startWait(run: BuildRun): void {
    const requires = run.job?.requires ?? [];
    // Say so, once per wait: otherwise a build waiting for workers looks like one that is running.
    this.#store.events.append('BUILD_WAITING_FOR_WORKERS', {
      build_id: run.id, no_worker_timeout_seconds: this.#timeoutMs / 1000, ...(requires.length > 0 ? { requires } : {}),
    });
    this.#log.warn({ buildId: run.id, requires, timeoutMs: this.#timeoutMs }, 'a build is waiting and no connected worker can run it');
    let timer: NodeJS.Timeout | null = null;
    if (this.#timeoutMs > 0) {
      timer = setTimeout(() => this.#timedOut(run.id), this.#timeoutMs);
      timer.unref();
    }
    this.#waits.set(run.id, { sinceMs: Date.now(), timer });
  }

  #timedOut(buildId: number): void {
    this.#waits.delete(buildId);
    const run = this.#readyRuns().find((candidate) => candidate.id === buildId);
    // Checked again, not trusted: a worker may have come just now, and the run may have left the ready phase.
    if (!run || run.phase !== 'ready' || this.#canBeServed(run)) return;
    const seconds = this.#timeoutMs / 1000;
    const requires = run.job?.requires ?? [];
    const hasWorkers = [...this.#registry.all()].some((worker) => worker.isAlive && !worker.isDraining);
    this.#giveUp(run, requires.length > 0 && hasWorkers
      ? `No connected worker carried every label this build requires (${requires.join(', ')}) for ${seconds} s ` +
        '(no_worker_timeout_seconds), so the build could not run. Start one with: ' +
        `clusterrunner worker --master-url <this master> --labels ${requires.join(',')}`
      : `No worker was connected to the master for ${seconds} s (no_worker_timeout_seconds), ` +
        'so the build could not run. Start a worker with: clusterrunner worker --master-url <this master>' +
        (requires.length > 0 ? ` --labels ${requires.join(',')}` : ''));
  }

  /**
   * Since when (epoch s) a ready build has had no worker to run on, when it will end ERROR for it (null:
   * never, no_worker_timeout_seconds = 0), and the labels it requires when that is why. Null when it is
   * not waiting for workers.
   */
  waitingSince(run: BuildRun | undefined): WaitingForWorkers | null {
    const wait = run === undefined || run.phase !== 'ready' ? undefined : this.#waits.get(run.id);
    if (wait === undefined) return null;
    const requires = run?.job?.requires ?? [];
    return {
      since: wait.sinceMs / 1000,
      gives_up_at: this.#timeoutMs === 0 ? null : (wait.sinceMs + this.#timeoutMs) / 1000,
      ...(requires.length > 0 ? { requires: [...requires] } : {}),
    };
  }

  close(): void {
    for (const wait of this.#waits.values()) if (wait.timer) clearTimeout(wait.timer);
    this.#waits.clear();
  }
}
