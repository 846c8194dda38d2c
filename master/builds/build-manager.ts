import { join } from 'node:path';
import type { Logger } from '../../shared/log.ts';
import type { ArtifactChunkHeader, WorkerMessage } from '../../shared/protocol.ts';
import type { GitCache } from '../../shared/git.ts';
import type { Store } from '../store/index.ts';
import { writeFailureText } from '../store/write-batcher.ts';
import type { Metrics } from '../metrics.ts';
import type { Lease, WorkerEntry, WorkerRegistry } from '../workers/worker-registry.ts';
import type { WorkerEvents } from '../workers/worker-events.ts';
import type { BuildRun } from './build-run.ts';
import { BuildIntake } from './build-intake.ts';
import type { BuildSettings } from './build-settings.ts';
import { createMask } from '../../shared/mask.ts';
import { DispatchLoop } from './dispatch-loop.ts';
import { Finisher } from './finisher.ts';
import { LeaseBook } from './lease-book.ts';
import { LeaseFiles } from './lease-files.ts';
import { NoWorkerWatch } from './no-worker-watch.ts';
import { Preparer } from './preparer.ts';
import { ProjectSnapshots } from './project-snapshot.ts';
import { recoverBuilds, startOrphanTimer } from './recovery.ts';
import { ResultRecorder } from './result-recorder.ts';
import { BuildRetrier } from './retry.ts';
import type { ResultsLayout } from './results-layout.ts';
import { WorkerSetups } from './worker-setups.ts';
import type { StoredJob } from '../model/stored-job.ts';

export type { BuildSettings } from './build-settings.ts';

type Message<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;

/**
 * The coordinator of every unfinished build; master/README.md maps a build's flow through the parts it
 * wires. It owns the live runs, answers the API, and turns worker events into calls on the parts, then
 * lets the dispatch loop look again. SQLite is written first, memory follows.
 */
export class BuildManager implements WorkerEvents {
  readonly #runs = new Map<number, BuildRun>();
  readonly #snapshots = new ProjectSnapshots();
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #store: Store;
  readonly #layout: ResultsLayout;
  readonly #leases: LeaseBook;
  readonly #setups: WorkerSetups;
  readonly #loop: DispatchLoop;
  readonly #finisher: Finisher;
  readonly #preparer: Preparer;
  readonly #intake: BuildIntake;
  readonly #recorder: ResultRecorder;
  readonly #retrier: BuildRetrier;
  readonly #watch: NoWorkerWatch;
  #orphanTimer: NodeJS.Timeout | null = null;
  #isClosed = false;

  constructor(deps: {
    store: Store; settings: BuildSettings; log: Logger; registry: WorkerRegistry; metrics: Metrics; layout: ResultsLayout;
    git: GitCache; checkoutsRoot: string;
    /** Results are waiting to be handled: the archives of running builds wait for them (archive.ts). */
    isBusy?: () => boolean;
    /** A build of the job has ended (the estimates learn from it in the background). */
    buildEnded?: (job: StoredJob) => void;
  }) {
    const { store, settings, log, registry, metrics, layout } = deps;
    const runs = this.#runs;
    this.#log = log;
    this.#metrics = metrics;
    this.#store = store;
    this.#layout = layout;
    const checkoutDir = (buildId: number) => join(deps.checkoutsRoot, String(buildId));
    const files = new LeaseFiles();
    const mask = createMask([settings.secret]);
    const finishInBackground = (run: BuildRun, status: Parameters<Finisher['finish']>[1], errorText: string | null = null) =>
      this.#finisher.finishInBackground(run, status, errorText);
    this.#leases = new LeaseBook({ store, log, layout, maxConsoleBytes: settings.maxConsoleBytes, runs, files });
    this.#setups = new WorkerSetups({ store, settings, log, registry, runs, finishInBackground });
    this.#loop = new DispatchLoop({ registry, setups: this.#setups, leases: this.#leases });
    this.#finisher = new Finisher({
      store, log, layout, metrics, registry, leases: this.#leases, setups: this.#setups, snapshots: this.#snapshots, checkoutDir,
      mask,
      stopDispatch: (run) => this.#loop.remove(run),
      finished: (run) => {
        runs.delete(run.id);
        this.#updateQueueDepth();
        this.#loop.schedule();
        if (run.job !== null) deps.buildEnded?.(run.job);
      },
    });
    const finish = (run: BuildRun, status: Parameters<Finisher['finish']>[1], errorText: string | null) => this.#finisher.finish(run, status, errorText);
    this.#watch = new NoWorkerWatch({
      store, log, registry, noWorkerTimeoutMs: settings.noWorkerTimeoutMs, readyRuns: () => this.#loop.runs,
      giveUp: (run, text) => finishInBackground(run, 'ERROR', text),
    });
    this.#preparer = new Preparer({ store, settings, log, registry, git: deps.git, checkoutDir, finish, makeReady: (run) => this.#makeReady(run) });
    this.#intake = new BuildIntake({ store, settings, log, runs, finish, prepare: (run) => {
      this.#preparer.enqueue(run);
      this.#updateQueueDepth();
    } });
    this.#recorder = new ResultRecorder({ store, settings, log, layout, metrics, runs, files, mask, finishInBackground,
      isBusy: deps.isBusy ?? (() => false) });
    this.#retrier = new BuildRetrier({
      store, log, runs, whenFinished: (buildId) => this.#finisher.whenFinished(buildId), makeReady: (run) => {
        this.#makeReady(run);
        this.#updateQueueDepth();
      },
    });
    store.batcher.setFailurePolicy({
      logFailure: (owner, error) => log.error({ buildId: owner ?? undefined, err: error }, 'a database write failed'),
      buildWriteFailed: (buildId, error) => {
        const run = runs.get(buildId);
        if (run && run.phase !== 'finishing') finishInBackground(run, 'ERROR', writeFailureText(error));
      },
    });
  }

  /** Picks up every build a previous master process left unfinished (restart recovery: recovery.ts). */
  start(): void {
    const recovered = recoverBuilds({ store: this.#store, log: this.#log, leases: this.#leases });
    for (const run of [...recovered.toPrepare, ...recovered.toRun, ...recovered.toFinish]) this.#runs.set(run.id, run);
    for (const run of recovered.toPrepare) this.#preparer.enqueue(run);
    for (const run of recovered.toFinish) this.#finisher.finishInBackground(run, 'OUTCOME');
    for (const run of recovered.toRun) this.#makeReady(run);
    this.#orphanTimer = startOrphanTimer({ log: this.#log, leases: this.#leases, released: () => this.#loop.schedule() });
    this.#updateQueueDepth();
  }

  createBuild(body: unknown): number { return this.#intake.createBuild(body); }

  cancel(buildId: number): Promise<void> { return this.#intake.cancel(buildId); }

  /** POST /v1/build/:id/retry (SPEC §10): see BuildRetrier.retry; returns how many atoms run again. */
  retry(buildId: number, atoms: readonly string[] | null): Promise<number> { return this.#retrier.retry(buildId, atoms); }

  async close(): Promise<void> {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#loop.close();
    this.#watch.close();
    if (this.#orphanTimer) clearTimeout(this.#orphanTimer);
    for (const run of this.#runs.values()) run.abort.abort();
    const preparing = this.#preparer.close();
    await this.#finisher.settle();
    // Builds still running resume after a restart, and write their archives then.
    await Promise.all([...this.#runs.values()].map((run) => run.archive?.abandon()));
    await preparing;
    this.#store.batcher.flush();
  }

  /** Executors that queued and running work can use now, with the labels each job requires; pools size themselves by it (master/pools/). */
  executorDemand(): { executors: number; requires: readonly string[] }[] {
    const demand: { executors: number; requires: readonly string[] }[] = [];
    for (const run of this.#runs.values()) {
      // A build still preparing will want at least one: starting a worker now saves its start-up time.
      if (run.phase === 'preparing') demand.push({ executors: 1, requires: [] });
      else if (run.phase === 'ready') demand.push({ executors: Math.min(run.job?.maxExecutors ?? Infinity, run.executorsInUse + run.pendingCount), requires: run.job?.requires ?? [] });
    }
    return demand;
  }

  /** For the API: see NoWorkerWatch.waitingSince. */
  waitingForWorkers(buildId: number): { since: number; gives_up_at: number | null } | null {
    return this.#watch.waitingSince(this.#runs.get(buildId));
  }

  /**
   * The project of an unfinished, prepared build as tar.gz, for workers that cannot get it themselves.
   * Null when the build has no project to serve (unknown, finished, or not prepared yet).
   */
  async projectSnapshot(buildId: number): Promise<string | null> {
    const run = this.#runs.get(buildId);
    if (!run || run.projectDir === null || run.phase === 'finishing') return null;
    return this.#snapshots.get(buildId, run.projectDir, this.#layout.snapshot(buildId));
  }

  #makeReady(run: BuildRun): void {
    run.enterPhase('ready');
    this.#loop.add(run);
    this.#watch.check();
  }

  #updateQueueDepth(): void {
    this.#metrics.queueDepth.set(this.#runs.size);
  }

  // ---- worker events (WorkerEvents): each is handled by its part, then dispatch looks again ----------------

  adoptLeases(worker: WorkerEntry, leaseIds: readonly string[]): string[] {
    return this.#leases.adopt(worker, leaseIds, (buildId) => this.#setups.adopted(worker, buildId));
  }

  buildsReported(worker: WorkerEntry, builds: NonNullable<Message<'register'>['builds']>): void {
    this.#setups.reconcile(worker, builds);
  }

  workerReady(worker: WorkerEntry): void {
    this.#store.events.append('WORKER_CONNECTED', { worker_id: worker.id, worker: worker.name, num_executors: worker.numExecutors });
    this.#watch.check();
    this.#loop.schedule();
  }

  /** An operator cleared a suspect worker (SPEC §15): it is out of the store too, and gets work again. */
  suspicionCleared(worker: WorkerEntry): void {
    this.#store.workers.setSuspicion(worker.name, null);
    this.healthChanged(worker, 'healthy', 'suspect cleared by an operator');
  }

  healthChanged(worker: WorkerEntry, health: 'healthy' | 'unhealthy', reason: string | null): void {
    this.#log.info({ workerId: worker.id, worker: worker.name, health, reason }, 'worker health changed');
    this.#store.events.append('WORKER_HEALTH_CHANGED', { worker_id: worker.id, worker: worker.name, health, reason });
    this.#loop.schedule();
  }

  workerLost(worker: WorkerEntry, reason: string): void {
    this.#log.warn({ workerId: worker.id, worker: worker.name, reason, leases: worker.leases.size }, 'worker lost; its work goes back to the queue');
    this.#store.events.append('WORKER_LOST', { worker_id: worker.id, worker: worker.name, reason });
    this.workerLeft(worker, false);
  }

  workerLeft(worker: WorkerEntry, isDrained = true): void {
    if (isDrained) this.#log.info({ workerId: worker.id, worker: worker.name }, 'worker left after draining');
    this.#leases.releaseWorker(worker);
    this.#setups.forgetWorker(worker);
    this.#watch.check();
    this.#loop.schedule();
  }

  leaseDropped(worker: WorkerEntry, lease: Lease): void {
    this.#leases.drop(worker, lease);
    this.#loop.schedule();
  }

  setupFinished(worker: WorkerEntry, message: Message<'setup_finished'>): void {
    this.#setups.setupFinished(worker, message);
    this.#loop.schedule();
  }

  teardownFinished(worker: WorkerEntry, message: Message<'teardown_finished'>): void {
    this.#setups.teardownFinished(worker, message);
    this.#loop.schedule();
  }

  // Output is not news for dispatch: these three do not schedule.
  atomStarted(worker: WorkerEntry, lease: Lease, message: Message<'atom_started'>): Promise<void> { return this.#recorder.atomStarted(worker, lease, message); }

  atomOutput(_worker: WorkerEntry, lease: Lease, message: Message<'atom_output'>): void { this.#recorder.atomOutput(lease, message); }

  artifactChunk(_worker: WorkerEntry, lease: Lease, header: ArtifactChunkHeader, bytes: Buffer): Promise<void> { return this.#recorder.artifactChunk(lease, header, bytes); }

  async atomFinished(worker: WorkerEntry, lease: Lease, message: Message<'atom_finished'>): Promise<void> {
    await this.#recorder.atomFinished(worker, lease, message);
    this.#loop.schedule();
  }

  executorFreed(worker: WorkerEntry, lease: Lease): void {
    this.#leases.freeExecutor(worker, lease);
    this.#loop.schedule();
  }

  subjobRefused(worker: WorkerEntry, _lease: Lease, message: Message<'subjob_refused'>): void {
    this.#setups.refused(worker, message);
  }

  subjobFinished(worker: WorkerEntry, lease: Lease): void {
    this.#leases.settle(lease);
    this.#setups.maybeTeardown(worker, lease.buildId);
    this.#loop.schedule();
  }
}
