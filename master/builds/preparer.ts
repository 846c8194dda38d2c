import { setImmediate as nextTurn } from 'node:timers/promises';
import PQueue from 'p-queue';
import type { Logger } from '../../shared/log.ts';
import { ClusterRunnerError, errorMessage } from '../../shared/errors.ts';
import type { GitCache } from '../../shared/git.ts';
import type { Store } from '../store/index.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import type { BuildRun } from './build-run.ts';
import type { BuildSettings } from './build-settings.ts';
import type { FinishStatus } from './finisher.ts';
import { groupAtoms } from './grouping.ts';
import { withTestFileEstimates } from '../tests/test-estimates.ts';
import { prepareDirectoryBuild, prepareGitBuild, type PreparedBuild } from './prepare.ts';
import { moveBuildStatus } from './status-writer.ts';

/**
 * The preparation queue (max_concurrent_preparations at a time): fetch the project, read the job, run the
 * atomizer, group the atoms into subjobs and record the plan; then the build is ready for workers.
 */
export class Preparer {
  readonly #store: Store;
  readonly #settings: BuildSettings;
  readonly #log: Logger;
  readonly #registry: WorkerRegistry;
  readonly #git: GitCache;
  readonly #checkoutDir: (buildId: number) => string;
  readonly #finish: (run: BuildRun, status: FinishStatus, errorText: string | null) => Promise<void>;
  readonly #makeReady: (run: BuildRun) => void;
  readonly #queue: PQueue;
  #isClosed = false;

  constructor(deps: {
    store: Store; settings: BuildSettings; log: Logger; registry: WorkerRegistry; git: GitCache; checkoutDir: (buildId: number) => string;
    finish: (run: BuildRun, status: FinishStatus, errorText: string | null) => Promise<void>; makeReady: (run: BuildRun) => void;
  }) {
    this.#store = deps.store;
    this.#settings = deps.settings;
    this.#log = deps.log;
    this.#registry = deps.registry;
    this.#git = deps.git;
    this.#checkoutDir = deps.checkoutDir;
    this.#finish = deps.finish;
    this.#makeReady = deps.makeReady;
    this.#queue = new PQueue({ concurrency: deps.settings.maxConcurrentPreparations });
  }

  enqueue(run: BuildRun): void {
    void this.#queue.add(() => this.#prepare(run)).catch((error: unknown) => {
      this.#log.error({ buildId: run.id, err: error }, 'preparation crashed');
    });
  }

  async close(): Promise<void> {
    this.#isClosed = true;
    this.#queue.clear();
    await this.#queue.onIdle();
  }

  async #prepare(run: BuildRun): Promise<void> {
    if (run.phase !== 'preparing' || this.#isClosed) return;
    // A restarted master prepares again a build the last one had started preparing.
    if (run.status !== 'PREPARING') moveBuildStatus(this.#store, run, 'PREPARING');
    this.#store.events.append('BUILD_PREPARE_START', { build_id: run.id });
    let prepared: PreparedBuild;
    // How long each part took, logged with 'build prepared' (bench/cold-start.ts reads it: issue 18).
    const startedMs = performance.now();
    const limits = {
      timeoutMs: this.#settings.atomizerTimeoutMs,
      maxOutputBytes: this.#settings.maxAtomizerOutputBytes,
      maxAtoms: this.#settings.maxAtoms,
      graceMs: this.#settings.killGraceMs,
    };
    try {
      prepared = run.request.type === 'git'
        ? await prepareGitBuild(run.request, { cache: this.#git, checkoutDir: this.#checkoutDir(run.id) }, limits, run.abort.signal)
        : await prepareDirectoryBuild(run.request, limits, run.abort.signal);
    } catch (error) {
      if (run.phase !== 'preparing' || this.#isClosed) return;
      const message = error instanceof ClusterRunnerError ? error.message : `Preparing the build failed: ${errorMessage(error)}`;
      this.#log.warn({ buildId: run.id, err: error }, 'preparation failed');
      await this.#finish(run, 'ERROR', message);
      return;
    }
    if (run.phase !== 'preparing' || this.#isClosed) return;
    const atomizedMs = performance.now();
    // An atom with no history of its own may still be a test file whose tests ran before (SPEC §15).
    const history = withTestFileEstimates(this.#store.db, prepared.job.timingKey, prepared.atoms, this.#store.timings.loadJob(prepared.job.timingKey));
    // Reading the history, grouping, storing the plan and the first dispatch each take tens of ms on a build of
    // 10,000 atoms: in one turn they held status reads for 200 ms (issue 18), so the loop turns between them.
    if (!(await this.#nextTurn(run))) return;
    const subjobs = groupAtoms(prepared.atoms, history, {
      executors: this.#plannedExecutors(prepared.job.maxExecutors),
    });
    const groupedMs = performance.now();
    if (!(await this.#nextTurn(run))) return;
    this.#store.batcher.flush();
    this.#store.db.transaction(() => {
      this.#store.atoms.insertPlan(run.id, subjobs);
      this.#store.builds.setPrepared(run.id, {
        projectDir: prepared.projectDir,
        job: prepared.job,
        numAtoms: prepared.atoms.length,
        numSubjobs: subjobs.length,
      });
    })();
    this.#store.events.append('BUILD_PREPARE_FINISH', { build_id: run.id, num_atoms: prepared.atoms.length });
    run.job = prepared.job;
    run.projectDir = prepared.projectDir;
    run.load(subjobs.map((subjob) => ({
      id: subjob.id,
      atoms: subjob.atoms.map((atom) => ({ id: atom.id, variable: atom.variable, value: atom.value, isComplete: false })),
      expectedSeconds: subjob.atoms.every((atom) => atom.expectedTime !== null) ? subjob.atoms.reduce((sum, atom) => sum + atom.expectedTime!, 0) : null,
    })));
    const phasesMs = {
      atomize: Math.round(atomizedMs - startedMs), group: Math.round(groupedMs - atomizedMs), store: Math.round(performance.now() - groupedMs),
    };
    this.#log.info({ buildId: run.id, atoms: prepared.atoms.length, subjobs: subjobs.length, phasesMs }, 'build prepared');
    if (prepared.atoms.length === 0) {
      await this.#finish(run, 'SUCCESS', null);
      return;
    }
    if (!(await this.#nextTurn(run))) return;
    this.#makeReady(run);
  }

  /** Lets the event loop turn; false when the build stopped being prepared meanwhile (canceled, or the master closing). */
  async #nextTurn(run: BuildRun): Promise<boolean> {
    await nextTurn();
    return run.phase === 'preparing' && !this.#isClosed;
  }

  /** What a new build can expect to get: every live executor now, within its max_executors. */
  #plannedExecutors(maxExecutors: number | null): number {
    let executors = 0;
    for (const worker of this.#registry.all()) if (worker.isAlive && !worker.isDraining) executors += worker.numExecutors;
    return Math.max(1, Math.min(executors, maxExecutors ?? Number.POSITIVE_INFINITY));
  }
}
