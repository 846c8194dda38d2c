import type { Logger } from '../../shared/log.ts';
import type { Store } from '../store/index.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import type { BuildRun } from './build-run.ts';

/**
 * Builds wait for workers, but not for ever: with no worker connected for no_worker_timeout_seconds, every
 * build waiting for one errors out (0 waits for ever). Any worker connecting stops the clock.
 */
export class NoWorkerWatch {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #registry: WorkerRegistry;
  readonly #timeoutMs: number;
  readonly #readyRuns: () => readonly BuildRun[];
  readonly #giveUp: (run: BuildRun, errorText: string) => void;
  #timer: NodeJS.Timeout | null = null;
  /** Since when builds ready to run have had no worker at all (epoch ms); null while some worker is connected. */
  #sinceMs: number | null = null;
  /** The builds told (event log) that they wait for a worker, since #sinceMs. */
  readonly #told = new Set<number>();

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
    const hasWorker = [...this.#registry.all()].some((worker) => worker.isAlive && !worker.isDraining);
    const waiting = this.#readyRuns();
    if (hasWorker || waiting.length === 0) {
      this.#sinceMs = null;
      this.#told.clear();
      this.close();
      return;
    }
    // Say so, once per build: otherwise a build waiting for workers looks like one that is running.
    this.#sinceMs ??= Date.now();
    for (const run of waiting) {
      if (this.#told.has(run.id)) continue;
      this.#told.add(run.id);
      this.#store.events.append('BUILD_WAITING_FOR_WORKERS', { build_id: run.id, no_worker_timeout_seconds: this.#timeoutMs / 1000 });
    }
    if (this.#timer || this.#timeoutMs === 0) return;
    this.#log.warn({ waitingBuilds: waiting.length, timeoutMs: this.#timeoutMs }, 'builds are waiting and no worker is connected');
    this.#timer = setTimeout(() => {
      this.#timer = null;
      const seconds = this.#timeoutMs / 1000;
      for (const run of [...this.#readyRuns()]) {
        this.#giveUp(run, `No worker was connected to the master for ${seconds} s (no_worker_timeout_seconds), ` +
          'so the build could not run. Start a worker with: clusterrunner worker --master-url <this master>');
      }
    }, this.#timeoutMs);
    this.#timer.unref();
  }

  /**
   * Since when (epoch s) a ready build has had no worker to run on, and when it will end ERROR for it (null:
   * never, no_worker_timeout_seconds = 0). Null when it is not waiting for workers.
   */
  waitingSince(run: BuildRun | undefined): { since: number; gives_up_at: number | null } | null {
    const since = this.#sinceMs;
    if (since === null || run?.phase !== 'ready') return null;
    return { since: since / 1000, gives_up_at: this.#timeoutMs === 0 ? null : (since + this.#timeoutMs) / 1000 };
  }

  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
