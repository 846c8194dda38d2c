import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import PQueue from 'p-queue';
import type { Logger } from '../../shared/log.ts';
import type { Conf } from '../../shared/conf.ts';
import { ClusterRunnerError, errorMessage, notFound } from '../../shared/errors.ts';
import type { ArtifactChunkHeader, WorkerMessage } from '../../shared/protocol.ts';
import { atomCommandString } from '../../shared/job-config.ts';
import type { Store } from '../store/index.ts';
import type { Metrics } from '../metrics.ts';
import { Dispatcher } from '../scheduling/dispatcher.ts';
import type { Lease, WorkerEntry, WorkerRegistry } from '../workers/worker-registry.ts';
import type { WorkerEvents } from '../workers/worker-events.ts';
import { BuildRun, type WorkItem } from './build-run.ts';
import { parseBuildRequest, redactRequestParams, type BuildRequest } from './build-request.ts';
import { isTerminal, type TerminalStatus } from './build-status.ts';
import { closeAtomFiles, createArtifactUpload, startAtomFolder } from './atom-files.ts';
import { groupAtoms } from './grouping.ts';
import { prepareDirectoryBuild, prepareGitBuild, type PreparedBuild } from './prepare.ts';
import { validateGitSource, type GitCache } from '../../shared/git.ts';
import { ProjectSnapshots } from './project-snapshot.ts';
import { ConsoleWriter } from './console-files.ts';
import type { StoredLease } from '../store/lease-store.ts';
import { writeBuildArchives, type AtomResultFiles } from './archive.ts';
import { atomFolderName, CONSOLE_FILE, type ResultsLayout } from './results-layout.ts';

type Message<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;

export type BuildSettings = Pick<Conf,
  'killGraceMs' | 'atomizerTimeoutMs' | 'maxAtomizerOutputBytes' | 'maxAtoms' | 'maxConsoleBytes' |
  'maxArtifactBytes' | 'maxArtifactFiles' | 'maxConcurrentPreparations' | 'noWorkerTimeoutMs' | 'allowLocalRepositories'>;

/** Setup may fail on this many workers in all before the build gives up (SPEC §5). */
const MAX_SETUP_FAILURES = 3;

/**
 * How long a restarted master keeps the leases of the work that was running, for their workers to come back
 * and resume them. Workers retry with backoff capped at 10 s (worker/connection.ts), so most are back within
 * a few seconds; after this the work runs again elsewhere.
 */
const RESTART_RESUME_MS = 15_000;

/** A lease from before a restart, waiting for its worker to come back. */
interface OrphanLease {
  readonly stored: StoredLease;
  /** Atoms of the lease with no result yet. */
  readonly unfinished: readonly number[];
  /** Of those, the ones that had started: their console output goes on where it stopped. */
  readonly started: readonly number[];
}

/**
 * Owns every unfinished build: prepares it, hands its work to the dispatcher, takes results from worker
 * sessions, and finishes it (archive, terminal status, teardown). SQLite is written first, memory follows.
 */
export class BuildManager implements WorkerEvents {
  readonly #store: Store;
  readonly #settings: BuildSettings;
  readonly #log: Logger;
  readonly #registry: WorkerRegistry;
  readonly #metrics: Metrics;
  readonly #layout: ResultsLayout;
  readonly #git: GitCache;
  readonly #checkoutsRoot: string;
  readonly #snapshots = new ProjectSnapshots();
  readonly #runs = new Map<number, BuildRun>();
  readonly #dispatcher: Dispatcher;
  readonly #preparations: PQueue;
  readonly #finishing = new Set<Promise<void>>();
  readonly #orphans = new Map<string, OrphanLease>();
  #orphanTimer: NodeJS.Timeout | null = null;
  #noWorkerTimer: NodeJS.Timeout | null = null;
  /** Since when builds ready to run have had no worker at all (epoch ms); null while some worker is connected. */
  #noWorkerSinceMs: number | null = null;
  /** The builds told (event log) that they wait for a worker, since #noWorkerSinceMs. */
  readonly #toldWaiting = new Set<number>();
  #isClosed = false;

  constructor(deps: {
    store: Store; settings: BuildSettings; log: Logger; registry: WorkerRegistry; metrics: Metrics; layout: ResultsLayout;
    git: GitCache; checkoutsRoot: string;
  }) {
    this.#git = deps.git;
    this.#checkoutsRoot = deps.checkoutsRoot;
    this.#store = deps.store;
    this.#settings = deps.settings;
    this.#log = deps.log;
    this.#registry = deps.registry;
    this.#metrics = deps.metrics;
    this.#layout = deps.layout;
    this.#preparations = new PQueue({ concurrency: deps.settings.maxConcurrentPreparations });
    this.#dispatcher = new Dispatcher(deps.registry, {
      startSetup: (run, worker) => this.#startSetup(run, worker),
      assign: (run, worker, item) => this.#assign(run, worker, item),
    });
  }

  /** Picks up every build a previous master process left unfinished (crash-only: nothing else to restore). */
  start(): void {
    for (const record of this.#store.builds.listUnfinished()) {
      const request = record.request as BuildRequest;
      const run = new BuildRun(record.id, record.priority, request);
      this.#runs.set(run.id, run);
      if (record.job === null || record.projectDir === null) {
        this.#enqueuePreparation(run);
        continue;
      }
      run.job = record.job;
      run.projectDir = record.projectDir;
      run.hasWorker = record.status === 'BUILDING';
      this.#loadPlan(run, this.#holdLeases(run));
      this.#log.info({ buildId: run.id, remainingAtoms: run.remainingAtoms }, 'resuming build after restart');
      if (run.remainingAtoms === 0) this.#finishInBackground(run, this.#outcome(run));
      else this.#makeReady(run);
    }
    if (this.#orphans.size > 0) {
      this.#log.info({ leases: this.#orphans.size, waitMs: RESTART_RESUME_MS }, 'keeping the leases that were running for their workers to resume');
      this.#orphanTimer = setTimeout(() => this.#releaseOrphans(), RESTART_RESUME_MS);
      this.#orphanTimer.unref();
    }
    this.#updateQueueDepth();
  }

  /** The leases of a build that were live when the last master stopped; returns the atoms they hold. */
  #holdLeases(run: BuildRun): Map<string, 'held'> {
    const atoms = new Map(this.#store.atoms.listBuildAtoms(run.id).map((atom) => [`${atom.subjobId}/${atom.id}`, atom]));
    const held = new Map<string, 'held'>();
    for (const stored of this.#store.leases.listBuild(run.id)) {
      const unfinished = stored.atomIds.filter((atomId) => atoms.get(`${stored.subjobId}/${atomId}`)?.state !== 'COMPLETED');
      const started = unfinished.filter((atomId) => atoms.get(`${stored.subjobId}/${atomId}`)?.state === 'IN_PROGRESS');
      for (const atomId of unfinished) held.set(`${stored.subjobId}/${atomId}`, 'held');
      run.holdBuildExecutor(stored.buildExecutorIndex);
      this.#orphans.set(stored.id, { stored, unfinished, started });
    }
    return held;
  }

  /** Workers that did not come back in time: what their leases held runs again, at the front of the queue. */
  #releaseOrphans(): void {
    this.#orphanTimer = null;
    for (const [id, orphan] of this.#orphans) {
      this.#orphans.delete(id);
      this.#store.leases.remove(id);
      const run = this.#runs.get(orphan.stored.buildId);
      if (!run || run.phase !== 'ready') continue;
      run.releaseHeldBuildExecutor(orphan.stored.buildExecutorIndex);
      if (orphan.unfinished.length === 0) continue;
      const { subjobId } = orphan.stored;
      this.#store.batcher.add(() => {
        for (const atomId of orphan.unfinished) this.#store.atoms.markRequeued(run.id, subjobId, atomId);
      });
      run.requeueFront({ subjobId, atomIds: orphan.unfinished, avoidWorkerId: null });
      this.#log.info({ buildId: run.id, subjobId, atoms: orphan.unfinished.length }, 'worker did not come back after the restart; its atoms run again');
    }
    this.#dispatcher.schedule();
  }

  adoptLeases(worker: WorkerEntry, leaseIds: readonly string[]): string[] {
    const adopted: string[] = [];
    for (const id of leaseIds) {
      const orphan = this.#orphans.get(id);
      // Only the very process the lease went to (its session) may resume it.
      if (!orphan || orphan.stored.sessionId !== worker.sessionId) continue;
      const run = this.#runs.get(orphan.stored.buildId);
      if (!run || run.phase !== 'ready' || !worker.claimExecutor(orphan.stored.executorIndex)) continue;
      this.#orphans.delete(id);
      run.adoptBuildExecutor(worker.id);
      const { stored } = orphan;
      const lease: Lease = {
        id,
        workerId: worker.id,
        buildId: run.id,
        subjobId: stored.subjobId,
        executorIndex: stored.executorIndex,
        buildExecutorIndex: stored.buildExecutorIndex,
        unfinished: new Set(orphan.unfinished),
        isRevoked: false,
        hasReleasedBuildExecutor: false,
        chain: Promise.resolve(),
        consoles: new Map(),
        outputBytes: new Map(),
        uploads: new Map(),
      };
      for (const atomId of orphan.started) {
        const dir = this.#layout.atomDir(run.id, stored.subjobId, atomId);
        // What reached the disk before the restart: the worker sends the rest again from there.
        const initialBytes = fileSize(join(dir, CONSOLE_FILE));
        lease.consoles.set(atomId, new ConsoleWriter(dir, this.#settings.maxConsoleBytes, { append: true, initialBytes }));
        lease.outputBytes.set(atomId, initialBytes);
      }
      worker.leases.set(id, lease);
      // It set the build up before the restart, and still has it.
      worker.builds.set(run.id, 'ready');
      adopted.push(id);
      this.#log.info({ buildId: run.id, subjobId: stored.subjobId, workerId: worker.id, leaseId: id }, 'lease resumed after the restart');
    }
    return adopted;
  }

  // ---- the API side -------------------------------------------------------------------------------------

  createBuild(body: unknown): number {
    const request = parseBuildRequest(body);
    if (request.type === 'git') {
      // Hostile URLs and refs are refused here, before any process could be started for them.
      validateGitSource(
        { url: request.url!, branch: request.branch, hash: request.hash, remote: request.remote },
        { allowLocalRepositories: this.#settings.allowLocalRepositories },
      );
    }
    const id = this.#store.builds.insert({
      requestParams: redactRequestParams(body as Record<string, unknown>),
      request,
      projectType: request.type,
      jobName: request.jobName,
      priority: request.priority,
    });
    this.#store.events.append('BUILD_REQUEST_QUEUED', { build_id: id, type: request.type });
    const run = new BuildRun(id, request.priority, request);
    this.#runs.set(id, run);
    this.#enqueuePreparation(run);
    this.#updateQueueDepth();
    this.#log.info({ buildId: id, type: request.type }, 'build queued');
    return id;
  }

  /** PUT {"status": "canceled"}: a no-op on a terminal build. */
  async cancel(buildId: number): Promise<void> {
    const record = this.#store.builds.get(buildId);
    if (!record) throw notFound(`Invalid build id: ${buildId}.`);
    const run = this.#runs.get(buildId);
    if (isTerminal(record.status) || !run || run.phase === 'finishing') return;
    this.#log.info({ buildId }, 'canceling build');
    await this.#finish(run, 'CANCELED', null);
  }

  async close(): Promise<void> {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#dispatcher.close();
    if (this.#noWorkerTimer) clearTimeout(this.#noWorkerTimer);
    if (this.#orphanTimer) clearTimeout(this.#orphanTimer);
    for (const run of this.#runs.values()) run.abort.abort();
    this.#preparations.clear();
    await Promise.allSettled([...this.#finishing]);
    await this.#preparations.onIdle();
    this.#store.batcher.flush();
  }

  // ---- preparation ----------------------------------------------------------------------------------------

  #enqueuePreparation(run: BuildRun): void {
    void this.#preparations.add(() => this.#prepare(run)).catch((error: unknown) => {
      this.#log.error({ buildId: run.id, err: error }, 'preparation crashed');
    });
  }

  async #prepare(run: BuildRun): Promise<void> {
    if (run.phase !== 'preparing' || this.#isClosed) return;
    this.#store.builds.setStatus(run.id, 'PREPARING');
    this.#store.events.append('BUILD_PREPARE_START', { build_id: run.id });
    let prepared: PreparedBuild;
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
    const subjobs = groupAtoms(prepared.atoms, this.#store.timings.loadJob(prepared.job.timingKey), {
      executors: this.#plannedExecutors(prepared.job.maxExecutors),
    });
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
    })));
    this.#log.info({ buildId: run.id, atoms: prepared.atoms.length, subjobs: subjobs.length }, 'build prepared');
    if (prepared.atoms.length === 0) {
      await this.#finish(run, 'SUCCESS', null);
      return;
    }
    this.#makeReady(run);
  }

  /** What a new build can expect to get: every live executor now, within its max_executors. */
  #plannedExecutors(maxExecutors: number | null): number {
    let executors = 0;
    for (const worker of this.#registry.all()) if (worker.isAlive && !worker.isDraining) executors += worker.numExecutors;
    return Math.max(1, Math.min(executors, maxExecutors ?? Number.POSITIVE_INFINITY));
  }

  /** A restarted master's view of a build: done atoms stay done, held ones wait for their worker, the rest queue. */
  #loadPlan(run: BuildRun, held: ReadonlyMap<string, 'held'>): void {
    const bySubjob = new Map<number, { id: number; atoms: { id: number; variable: string; value: string; isComplete: boolean; isHeld: boolean }[] }>();
    const atoms = this.#store.atoms.listBuildAtoms(run.id);
    const requeued: { subjobId: number; id: number }[] = [];
    for (const atom of atoms) {
      let subjob = bySubjob.get(atom.subjobId);
      if (!subjob) bySubjob.set(atom.subjobId, (subjob = { id: atom.subjobId, atoms: [] }));
      const isHeld = held.has(`${atom.subjobId}/${atom.id}`);
      if (atom.state === 'IN_PROGRESS' && !isHeld) requeued.push(atom);
      subjob.atoms.push({ id: atom.id, variable: atom.variable, value: atom.value, isComplete: atom.state === 'COMPLETED', isHeld });
    }
    this.#store.batcher.add(() => {
      for (const atom of requeued) this.#store.atoms.markRequeued(run.id, atom.subjobId, atom.id);
    });
    run.load([...bySubjob.values()]);
    for (const atom of atoms) run.restoreAttempts(atom.subjobId, atom.id, atom.attempts);
  }

  #makeReady(run: BuildRun): void {
    run.phase = 'ready';
    this.#dispatcher.addRun(run);
    this.#watchForWorkers();
  }

  /**
   * Builds wait for workers, but not for ever: with no worker connected for no_worker_timeout_seconds, every
   * build waiting for one errors out (0 waits for ever). Any worker connecting stops the clock.
   */
  #watchForWorkers(): void {
    const hasWorker = [...this.#registry.all()].some((worker) => worker.isAlive && !worker.isDraining);
    const isWaiting = this.#dispatcher.runs.length > 0;
    if (hasWorker || !isWaiting) {
      this.#noWorkerSinceMs = null;
      this.#toldWaiting.clear();
      if (this.#noWorkerTimer) clearTimeout(this.#noWorkerTimer);
      this.#noWorkerTimer = null;
      return;
    }
    // Say so, once per build: otherwise a build waiting for workers looks like one that is running.
    this.#noWorkerSinceMs ??= Date.now();
    for (const run of this.#dispatcher.runs) {
      if (this.#toldWaiting.has(run.id)) continue;
      this.#toldWaiting.add(run.id);
      this.#store.events.append('BUILD_WAITING_FOR_WORKERS', { build_id: run.id, no_worker_timeout_seconds: this.#settings.noWorkerTimeoutMs / 1000 });
    }
    if (this.#noWorkerTimer || this.#settings.noWorkerTimeoutMs === 0) return;
    this.#log.warn({ waitingBuilds: this.#dispatcher.runs.length, timeoutMs: this.#settings.noWorkerTimeoutMs }, 'builds are waiting and no worker is connected');
    this.#noWorkerTimer = setTimeout(() => {
      this.#noWorkerTimer = null;
      const seconds = this.#settings.noWorkerTimeoutMs / 1000;
      for (const run of [...this.#dispatcher.runs]) {
        this.#finishInBackground(run, 'ERROR', `No worker was connected to the master for ${seconds} s (no_worker_timeout_seconds), ` +
          'so the build could not run. Start a worker with: clusterrunner worker --master-url <this master>');
      }
    }, this.#settings.noWorkerTimeoutMs);
    this.#noWorkerTimer.unref();
  }

  /**
   * For the API: since when (epoch s) a build ready to run has had no worker to run on, and when it will end
   * ERROR for it (null: never, no_worker_timeout_seconds = 0). Null when it is not waiting for workers.
   */
  waitingForWorkers(buildId: number): { since: number; gives_up_at: number | null } | null {
    const since = this.#noWorkerSinceMs;
    if (since === null || this.#runs.get(buildId)?.phase !== 'ready') return null;
    const timeoutMs = this.#settings.noWorkerTimeoutMs;
    return { since: since / 1000, gives_up_at: timeoutMs === 0 ? null : (since + timeoutMs) / 1000 };
  }

  // ---- dispatch actions -----------------------------------------------------------------------------------

  #startSetup(run: BuildRun, worker: WorkerEntry): void {
    const job = run.job!;
    worker.builds.set(run.id, 'setting_up');
    if (!run.hasWorker) {
      run.hasWorker = true;
      this.#store.builds.setStatus(run.id, 'BUILDING');
    }
    this.#store.events.append('BUILD_SETUP_START', { build_id: run.id, worker_id: worker.id, worker: worker.name });
    worker.send({
      type: 'setup_build',
      build_id: run.id,
      project: job.project,
      snapshot_path: `/v1/build/${run.id}/project.tar.gz`,
      remote_files: job.remoteFiles,
      setup_command: job.setupCommand,
      teardown_command: job.teardownCommand,
      command: job.command,
      atom_timeout_ms: job.atomTimeoutMs,
      kill_grace_ms: this.#settings.killGraceMs,
      max_console_bytes: this.#settings.maxConsoleBytes,
    });
  }

  #assign(run: BuildRun, worker: WorkerEntry, item: WorkItem): void {
    const lease: Lease = {
      id: randomUUID(),
      workerId: worker.id,
      buildId: run.id,
      subjobId: item.subjobId,
      executorIndex: worker.takeExecutor(),
      buildExecutorIndex: run.takeBuildExecutor(worker.id),
      unfinished: new Set(item.atomIds),
      isRevoked: false,
      hasReleasedBuildExecutor: false,
      chain: Promise.resolve(),
      consoles: new Map(),
      uploads: new Map(),
      outputBytes: new Map(),
    };
    worker.leases.set(lease.id, lease);
    this.#store.leases.add({
      id: lease.id, buildId: run.id, subjobId: item.subjobId, workerName: worker.name, sessionId: worker.sessionId,
      executorIndex: lease.executorIndex, buildExecutorIndex: lease.buildExecutorIndex, atomIds: item.atomIds,
    });
    const atoms = run.atoms[item.subjobId]!;
    worker.send({
      type: 'run_subjob',
      lease_id: lease.id,
      build_id: run.id,
      subjob_id: item.subjobId,
      executor_index: lease.executorIndex,
      build_executor_index: lease.buildExecutorIndex,
      atoms: item.atomIds.map((atomId) => {
        const atom = atoms[atomId]!;
        return { atom_id: atomId, command_string: atomCommandString(atom.variable, atom.value), env: { [atom.variable]: atom.value } };
      }),
    });
    this.#store.batcher.add(() => this.#store.atoms.setSubjobState(run.id, item.subjobId, 'IN_PROGRESS', worker.name));
    this.#store.events.append('MASTER_TRIGGERED_SUBJOB', {
      build_id: run.id, subjob_id: item.subjobId, worker_id: worker.id, worker: worker.name, executor: lease.executorIndex,
    });
  }

  // ---- worker events --------------------------------------------------------------------------------------

  workerReady(worker: WorkerEntry): void {
    this.#store.events.append('WORKER_CONNECTED', { worker_id: worker.id, worker: worker.name, num_executors: worker.numExecutors });
    this.#watchForWorkers();
    this.#dispatcher.schedule();
  }

  workerLost(worker: WorkerEntry, reason: string): void {
    this.#log.warn({ workerId: worker.id, worker: worker.name, reason, leases: worker.leases.size }, 'worker lost; its work goes back to the queue');
    this.#store.events.append('WORKER_LOST', { worker_id: worker.id, worker: worker.name, reason });
    this.#releaseWorker(worker);
  }

  workerLeft(worker: WorkerEntry): void {
    this.#log.info({ workerId: worker.id, worker: worker.name }, 'worker left after draining');
    this.#releaseWorker(worker);
  }

  #releaseWorker(worker: WorkerEntry): void {
    for (const lease of worker.leases.values()) this.#revoke(lease, true);
    worker.leases.clear();
    worker.builds.clear();
    this.#watchForWorkers();
    this.#dispatcher.schedule();
  }

  leaseDropped(worker: WorkerEntry, lease: Lease): void {
    this.#revoke(lease, true);
    worker.leases.delete(lease.id);
    worker.releaseExecutor(lease.executorIndex);
    this.#dispatcher.schedule();
  }

  setupFinished(worker: WorkerEntry, message: Message<'setup_finished'>): void {
    const run = this.#runs.get(message.build_id);
    const state = worker.builds.get(message.build_id);
    if (state !== 'setting_up') return;
    this.#store.events.append('BUILD_SETUP_FINISH', {
      build_id: message.build_id, worker_id: worker.id, worker: worker.name, ok: message.ok, exit_code: message.exit_code,
    });
    if (!run || run.phase !== 'ready') {
      // The build ended while this worker set it up: undo the setup.
      if (message.ok) this.#teardown(worker, message.build_id);
      else worker.builds.delete(message.build_id);
      return;
    }
    if (message.ok) {
      worker.builds.set(run.id, 'ready');
      this.#dispatcher.schedule();
      return;
    }
    worker.builds.set(run.id, 'failed');
    run.setupFailures++;
    this.#log.warn({ buildId: run.id, workerId: worker.id, exitCode: message.exit_code }, 'setup failed on worker');
    const othersStillTrying = [...this.#registry.all()].some((other) =>
      other.isAlive && (other.builds.get(run.id) === 'ready' || other.builds.get(run.id) === 'setting_up'));
    if (run.setupFailures >= MAX_SETUP_FAILURES || !othersStillTrying) {
      const text = `Setup of the build failed on worker ${worker.name} (exit code ${message.exit_code ?? 'none'})` +
        `${run.setupFailures > 1 ? `, after failing on ${run.setupFailures} workers in all` : ''}. ` +
        `Last lines of the setup output:\n${message.output_tail}`;
      this.#finishInBackground(run, 'ERROR', text);
    } else {
      this.#dispatcher.schedule();
    }
  }

  teardownFinished(worker: WorkerEntry, message: Message<'teardown_finished'>): void {
    if (worker.builds.get(message.build_id) === 'tearing_down') worker.builds.delete(message.build_id);
    this.#store.events.append('BUILD_TEARDOWN_FINISH', {
      build_id: message.build_id, worker_id: worker.id, worker: worker.name, ok: message.ok, exit_code: message.exit_code,
      output_tail: message.output_tail,
    });
    const log = this.#log.child({ buildId: message.build_id, workerId: worker.id });
    if (message.ok) log.info('teardown finished');
    else log.warn({ exitCode: message.exit_code, output: message.output_tail }, 'teardown failed');
    this.#dispatcher.schedule();
  }

  async atomStarted(worker: WorkerEntry, lease: Lease, message: Message<'atom_started'>): Promise<void> {
    const run = this.#runs.get(lease.buildId);
    if (!run || !lease.unfinished.has(message.atom_id)) return;
    const attempt = run.countAttempt(lease.subjobId, message.atom_id);
    const dir = this.#layout.atomDir(run.id, lease.subjobId, message.atom_id);
    lease.consoles.get(message.atom_id)?.close().catch(() => undefined);
    lease.consoles.set(message.atom_id, await startAtomFolder(dir, this.#settings.maxConsoleBytes, attempt === 1));
    this.#store.batcher.add(() => this.#store.atoms.markStarted(run.id, lease.subjobId, message.atom_id, worker.name));
    this.#store.events.append('ATOM_START', {
      build_id: run.id, subjob_id: lease.subjobId, atom_id: message.atom_id, worker: worker.name, attempt,
    });
  }

  atomOutput(_worker: WorkerEntry, lease: Lease, message: Message<'atom_output'>): void {
    lease.consoles.get(message.atom_id)?.write(message.data);
  }

  async artifactChunk(_worker: WorkerEntry, lease: Lease, header: ArtifactChunkHeader, bytes: Buffer): Promise<void> {
    if (!lease.unfinished.has(header.atom_id)) return;
    let upload = lease.uploads.get(header.atom_id);
    if (!upload) {
      upload = createArtifactUpload(this.#layout.atomDir(lease.buildId, lease.subjobId, header.atom_id), {
        maxBytes: this.#settings.maxArtifactBytes, maxEntries: this.#settings.maxArtifactFiles,
      });
      lease.uploads.set(header.atom_id, upload);
    }
    if (bytes.length > 0) await upload.write(bytes);
    if (header.final) await upload.finish().catch(() => undefined);
  }

  async atomFinished(worker: WorkerEntry, lease: Lease, message: Message<'atom_finished'>): Promise<void> {
    const run = this.#runs.get(lease.buildId);
    if (!run || run.phase === 'finishing' || !lease.unfinished.has(message.atom_id)) return;
    const atomId = message.atom_id;
    const upload = lease.uploads.get(atomId);
    const console = lease.consoles.get(atomId);
    lease.uploads.delete(atomId);
    lease.consoles.delete(atomId);
    const atom = run.atoms[lease.subjobId]![atomId]!;
    let exitCode: number;
    try {
      exitCode = await closeAtomFiles({
        dir: this.#layout.atomDir(run.id, lease.subjobId, atomId),
        console,
        upload,
        hasArtifacts: message.has_artifacts,
        exitCode: message.exit_code,
      });
    } catch (error) {
      // Without its files the result cannot be trusted, and running the atom again would most likely meet
      // the same full disk: the build ends in ERROR, saying why, rather than SUCCESS with output missing.
      this.#log.error({ buildId: run.id, subjobId: lease.subjobId, atomId, err: error }, 'could not store atom result');
      const dir = this.#layout.atomDir(run.id, lease.subjobId, atomId);
      this.#finishInBackground(run, 'ERROR', `The master could not store the output of atom ${atomFolderName(lease.subjobId, atomId)} ` +
        `in ${dir}: ${errorMessage(error)}. Is the master's disk full?`);
      return;
    }
    if (lease.isRevoked || run.phase !== 'ready' || !lease.unfinished.delete(atomId)) return;
    const log = this.#log.child({ buildId: run.id, subjobId: lease.subjobId, atomId, workerId: worker.id });
    const attempt = run.attemptsOf(lease.subjobId, atomId);
    if (exitCode !== 0 && message.stop_reason === null && attempt <= run.job!.retries) {
      log.info({ exitCode, attempt }, 'atom failed; retrying it');
      this.#store.batcher.add(() => this.#store.atoms.markRetrying(run.id, lease.subjobId, atomId));
      run.requeueFront({ subjobId: lease.subjobId, atomIds: [atomId], avoidWorkerId: worker.id });
      this.#dispatcher.schedule();
      return;
    }
    this.#store.batcher.add(() =>
      this.#store.atoms.markFinished(run.id, lease.subjobId, atomId, exitCode, message.time_s, message.stop_reason));
    this.#store.events.append('ATOM_FINISH', {
      build_id: run.id, subjob_id: lease.subjobId, atom_id: atomId, exit_code: exitCode, time: message.time_s, worker: worker.name,
    });
    this.#store.events.append('MASTER_RECEIVED_RESULT', { build_id: run.id, subjob_id: lease.subjobId, atom_id: atomId, worker: worker.name });
    this.#metrics.atomsTotal.inc({ result: exitCode === 0 ? 'success' : 'failure' });
    if (message.stop_reason === null || message.stop_reason === 'timeout') {
      this.#store.timings.record(run.job!.timingKey, atomCommandString(atom.variable, atom.value), message.time_s);
    }
    if (run.completeAtom(lease.subjobId, atomId)) {
      const completed = run.completedSubjobs;
      this.#store.batcher.add(() => {
        this.#store.atoms.setSubjobState(run.id, lease.subjobId, 'COMPLETED');
        this.#store.builds.setCompletedSubjobs(run.id, completed);
      });
    }
    if (run.remainingAtoms === 0) this.#finishInBackground(run, this.#outcome(run));
  }

  executorFreed(worker: WorkerEntry, lease: Lease): void {
    worker.leases.delete(lease.id);
    this.#store.leases.remove(lease.id);
    worker.releaseExecutor(lease.executorIndex);
    this.#releaseBuildExecutor(lease);
    this.#dispatcher.schedule();
  }

  subjobFinished(worker: WorkerEntry, lease: Lease): void {
    if (!lease.isRevoked) {
      const run = this.#runs.get(lease.buildId);
      // The worker stopped early (its atoms were stopped): whatever has no result runs again.
      this.#revoke(lease, run?.phase === 'ready');
    }
    this.#maybeTeardown(worker, lease.buildId);
    this.#dispatcher.schedule();
  }

  // ---- helpers ----------------------------------------------------------------------------------------------

  /** Stops honouring a lease; its unfinished atoms go back to the front of the queue when requeue is set. */
  #revoke(lease: Lease, requeue: boolean): void {
    if (lease.isRevoked) return;
    lease.isRevoked = true;
    this.#store.leases.remove(lease.id);
    for (const console of lease.consoles.values()) console.close().catch(() => undefined);
    lease.consoles.clear();
    for (const upload of lease.uploads.values()) upload.abort();
    lease.uploads.clear();
    this.#releaseBuildExecutor(lease);
    const run = this.#runs.get(lease.buildId);
    if (!run || !requeue || run.phase !== 'ready' || lease.unfinished.size === 0) return;
    const atomIds = [...lease.unfinished].sort((a, b) => a - b);
    this.#store.batcher.add(() => {
      for (const atomId of atomIds) this.#store.atoms.markRequeued(run.id, lease.subjobId, atomId);
    });
    run.requeueFront({ subjobId: lease.subjobId, atomIds, avoidWorkerId: null });
    this.#log.info({ buildId: run.id, subjobId: lease.subjobId, atoms: atomIds.length }, 'requeued unfinished atoms');
  }

  #releaseBuildExecutor(lease: Lease): void {
    if (lease.hasReleasedBuildExecutor) return;
    lease.hasReleasedBuildExecutor = true;
    this.#runs.get(lease.buildId)?.releaseBuildExecutor(lease.workerId, lease.buildExecutorIndex);
  }

  /** Teardown once the worker has nothing of the build running and the build has nothing left to give. */
  #maybeTeardown(worker: WorkerEntry, buildId: number): void {
    if (worker.builds.get(buildId) !== 'ready') return;
    for (const lease of worker.leases.values()) if (lease.buildId === buildId) return;
    const run = this.#runs.get(buildId);
    if (run && run.phase === 'ready' && run.hasPendingWork) return;
    this.#teardown(worker, buildId);
  }

  #teardown(worker: WorkerEntry, buildId: number): void {
    worker.builds.set(buildId, 'tearing_down');
    worker.send({ type: 'teardown_build', build_id: buildId });
  }

  #outcome(run: BuildRun): TerminalStatus {
    this.#store.batcher.flush();
    return this.#store.atoms.listFailedAtoms(run.id).length > 0 ? 'FAILURE' : 'SUCCESS';
  }

  #finishInBackground(run: BuildRun, status: TerminalStatus, errorText: string | null = null): void {
    const done = this.#finish(run, status, errorText).catch((error: unknown) => {
      this.#log.error({ buildId: run.id, err: error }, 'finishing the build failed');
    });
    this.#finishing.add(done);
    void done.finally(() => this.#finishing.delete(done));
  }

  /**
   * The one way a build ends. Dispatch stops at once and running work is stopped (cancel/error); then the
   * archive of every finished atom is written, and only then is the status made terminal, so a client that
   * sees a terminal build can always download its artifacts.
   */
  async #finish(run: BuildRun, status: TerminalStatus, errorText: string | null): Promise<void> {
    if (run.phase === 'finishing') return;
    run.phase = 'finishing';
    run.abort.abort();
    this.#dispatcher.removeRun(run);
    run.clearPendingWork();
    this.#store.leases.removeBuild(run.id);
    for (const [id, orphan] of this.#orphans) if (orphan.stored.buildId === run.id) this.#orphans.delete(id);
    for (const worker of this.#registry.all()) {
      const leases = [...worker.leases.values()].filter((lease) => lease.buildId === run.id && !lease.isRevoked);
      for (const lease of leases) this.#revoke(lease, false);
      const state = worker.builds.get(run.id);
      if (leases.length > 0 || state === 'setting_up') {
        // Stop now: atoms still running belong to a build that has ended (cancel, or an error elsewhere).
        worker.send({ type: 'cancel_build', build_id: run.id });
        worker.builds.set(run.id, 'tearing_down');
      } else if (state === 'ready') {
        this.#teardown(worker, run.id);
      } else if (state === 'failed') {
        worker.builds.delete(run.id);
      }
    }
    this.#store.batcher.flush();
    let finalStatus = status;
    let finalError = errorText;
    const failures = this.#store.atoms.listFailedAtoms(run.id).map((atom) => atomFolderName(atom.subjobId, atom.id));
    try {
      await mkdir(this.#layout.artifactsDir(run.id), { recursive: true });
      await writeBuildArchives({
        artifactsDir: this.#layout.artifactsDir(run.id),
        tarGzPath: this.#layout.tarGz(run.id),
        zipPath: this.#layout.zip(run.id),
        results: this.#atomResults(run),
        failures,
      });
      this.#store.builds.setArtifactsReady(run.id);
    } catch (error) {
      this.#log.error({ buildId: run.id, err: error }, 'could not write the artifact archive');
      // Never SUCCESS (or FAILURE) with artifacts missing: the user could not see what ran.
      if (finalStatus === 'SUCCESS' || finalStatus === 'FAILURE') {
        finalStatus = 'ERROR';
        finalError = `The build's atoms finished but its artifact archive could not be written: ${errorMessage(error)}`;
      }
    }
    this.#store.builds.setStatus(run.id, finalStatus, finalError);
    this.#store.events.append('BUILD_FINISHED', { build_id: run.id, status: finalStatus });
    // The project copies were for preparing and for workers setting up; neither happens any more.
    await this.#snapshots.forget(run.id, this.#layout.snapshot(run.id)).catch(() => undefined);
    if (run.request.type === 'git') await rm(this.#checkoutDir(run.id), { recursive: true, force: true }).catch(() => undefined);
    this.#store.batcher.flush();
    this.#runs.delete(run.id);
    const record = this.#store.builds.get(run.id);
    this.#metrics.buildsTotal.inc({ status: finalStatus });
    const queued = record?.stateTimestamps['queued'];
    if (queued !== undefined) this.#metrics.buildDuration.observe(Date.now() / 1000 - queued);
    this.#updateQueueDepth();
    this.#log.info({ buildId: run.id, status: finalStatus }, 'build finished');
    this.#dispatcher.schedule();
  }

  /** Every accepted result of the build, as the archive writes it (SPEC §7). */
  #atomResults(run: BuildRun): AtomResultFiles[] {
    const command = run.job?.command ?? '';
    const results: AtomResultFiles[] = [];
    for (const atom of this.#store.atoms.listBuildAtoms(run.id)) {
      if (atom.state !== 'COMPLETED' || atom.exitCode === null) continue;
      results.push({
        subjobId: atom.subjobId,
        atomId: atom.id,
        command: `${atomCommandString(atom.variable, atom.value)} ${command}`,
        exitCode: atom.exitCode,
        timeS: atom.actualTime ?? 0,
      });
    }
    return results;
  }

  #updateQueueDepth(): void {
    this.#metrics.queueDepth.set(this.#runs.size);
  }

  #checkoutDir(buildId: number): string {
    return join(this.#checkoutsRoot, String(buildId));
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

  /** For the API: the live run of a build, when it has one. */
  liveRun(buildId: number): BuildRun | undefined {
    return this.#runs.get(buildId);
  }
}

/** The size of a file, 0 when there is none (an atom that had printed nothing yet has no console file). */
function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}
