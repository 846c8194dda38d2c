import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../shared/log.ts';
import { atomCommandString } from '../../shared/job-config.ts';
import type { Store } from '../store/index.ts';
import type { StoredLease } from '../store/lease-store.ts';
import type { WorkItem } from '../model/work-item.ts';
import type { Lease, WorkerEntry } from '../workers/worker-registry.ts';
import type { BuildRun } from './build-run.ts';
import { ConsoleWriter } from './console-files.ts';
import type { LeaseFiles } from './lease-files.ts';
import { CONSOLE_FILE, type ResultsLayout } from './results-layout.ts';

/** A lease from before a restart, waiting for its worker to come back. */
interface OrphanLease {
  readonly stored: StoredLease;
  /** Atoms of the lease with no result yet. */
  readonly unfinished: readonly number[];
  /** Of those, the ones that had started: their console output goes on where it stopped. */
  readonly started: readonly number[];
}

/**
 * Every lease the master hands out: the only place a lease is created, revoked, kept for its worker after a
 * master restart (an orphan), resumed by that worker, or given up. SQLite holds the live ones (lease-store).
 */
export class LeaseBook {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #layout: ResultsLayout;
  readonly #maxConsoleBytes: number;
  readonly #runs: ReadonlyMap<number, BuildRun>;
  readonly #files: LeaseFiles;
  readonly #orphans = new Map<string, OrphanLease>();

  constructor(deps: { store: Store; log: Logger; layout: ResultsLayout; maxConsoleBytes: number; runs: ReadonlyMap<number, BuildRun>; files: LeaseFiles }) {
    this.#store = deps.store;
    this.#log = deps.log;
    this.#layout = deps.layout;
    this.#maxConsoleBytes = deps.maxConsoleBytes;
    this.#runs = deps.runs;
    this.#files = deps.files;
  }

  /** Leases the work item to one free executor of the worker, and tells the worker to run it. */
  create(run: BuildRun, worker: WorkerEntry, item: WorkItem): void {
    this.#issue(run, worker, item, this.#newLease({
      id: randomUUID(), worker, buildId: run.id, subjobId: item.subjobId, executorIndex: worker.takeExecutor(),
      buildExecutorIndex: run.takeBuildExecutor(worker.id), atomIds: item.atomIds, buildExecutorHold: { holders: 1 },
    }));
  }

  /**
   * Leases the work item to the executor that runs `current`, to start there the moment `current` ends
   * (issue 18): same machine executor, same BUILD_EXECUTOR_INDEX, no more executors of the build in use.
   */
  createAhead(run: BuildRun, worker: WorkerEntry, item: WorkItem, current: Lease): void {
    current.buildExecutorHold.holders++;
    this.#issue(run, worker, item, this.#newLease({
      id: randomUUID(), worker, buildId: run.id, subjobId: item.subjobId, executorIndex: current.executorIndex,
      buildExecutorIndex: current.buildExecutorIndex, atomIds: item.atomIds, buildExecutorHold: current.buildExecutorHold,
    }));
  }

  #issue(run: BuildRun, worker: WorkerEntry, item: WorkItem, lease: Lease): void {
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

  #newLease(init: {
    id: string; worker: WorkerEntry; buildId: number; subjobId: number; executorIndex: number; buildExecutorIndex: number; atomIds: readonly number[];
    buildExecutorHold: { holders: number };
  }): Lease {
    const lease: Lease = {
      id: init.id,
      workerId: init.worker.id,
      buildId: init.buildId,
      subjobId: init.subjobId,
      executorIndex: init.executorIndex,
      buildExecutorIndex: init.buildExecutorIndex,
      unfinished: new Set(init.atomIds),
      isRevoked: false,
      hasReleasedBuildExecutor: false,
      buildExecutorHold: init.buildExecutorHold,
      chain: null,
      outputBytes: new Map(),
    };
    init.worker.leases.set(lease.id, lease);
    return lease;
  }

  // ---- after a master restart ------------------------------------------------------------------------------

  /** Keeps the leases of a build that were live when the last master stopped; returns the atoms they hold. */
  holdOrphans(run: BuildRun): Set<string> {
    const atoms = new Map(this.#store.atoms.listBuildAtoms(run.id).map((atom) => [`${atom.subjobId}/${atom.id}`, atom]));
    const held = new Set<string>();
    for (const stored of this.#store.leases.listBuild(run.id)) {
      const unfinished = stored.atomIds.filter((atomId) => atoms.get(`${stored.subjobId}/${atomId}`)?.state !== 'COMPLETED');
      const started = unfinished.filter((atomId) => atoms.get(`${stored.subjobId}/${atomId}`)?.state === 'IN_PROGRESS');
      for (const atomId of unfinished) held.add(`${stored.subjobId}/${atomId}`);
      run.holdBuildExecutor(stored.buildExecutorIndex);
      this.#orphans.set(stored.id, { stored, unfinished, started });
    }
    return held;
  }

  get orphanCount(): number {
    return this.#orphans.size;
  }

  /** Workers that did not come back in time: what their leases held runs again, at the front of the queue. */
  releaseOrphans(): void {
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
      }, run.id);
      run.requeueFront({ subjobId, atomIds: orphan.unfinished, avoidWorkerId: null });
      this.#log.info({ buildId: run.id, subjobId, atoms: orphan.unfinished.length }, 'worker did not come back after the restart; its atoms run again');
    }
  }

  /**
   * A worker new to this master says it still runs these leases: those kept for it are resumed (returned);
   * onAdopted tells the caller which build the worker has set up.
   */
  adopt(worker: WorkerEntry, leaseIds: readonly string[], onAdopted: (buildId: number) => void): string[] {
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
      const lease = this.#newLease({
        id, worker, buildId: run.id, subjobId: stored.subjobId, executorIndex: stored.executorIndex,
        buildExecutorIndex: stored.buildExecutorIndex, atomIds: orphan.unfinished, buildExecutorHold: { holders: 1 },
      });
      for (const atomId of orphan.started) {
        const dir = this.#layout.atomDir(run.id, stored.subjobId, atomId);
        // What reached the disk before the restart: the worker sends the rest again from there.
        const initialBytes = fileSize(join(dir, CONSOLE_FILE));
        this.#files.setConsole(id, atomId, new ConsoleWriter(dir, this.#maxConsoleBytes, { append: true, initialBytes }));
        lease.outputBytes.set(atomId, initialBytes);
      }
      onAdopted(run.id);
      adopted.push(id);
      this.#log.info({ buildId: run.id, subjobId: stored.subjobId, workerId: worker.id, leaseId: id }, 'lease resumed after the restart');
    }
    return adopted;
  }

  // ---- ending leases -----------------------------------------------------------------------------------------

  /** Stops honouring a lease; its unfinished atoms go back to the front of the queue when requeue is set. */
  revoke(lease: Lease, requeue: boolean): void {
    if (lease.isRevoked) return;
    lease.isRevoked = true;
    this.#store.leases.remove(lease.id);
    this.#files.discard(lease.id);
    this.#releaseBuildExecutor(lease);
    const run = this.#runs.get(lease.buildId);
    if (!run || !requeue || run.phase !== 'ready' || lease.unfinished.size === 0) return;
    const atomIds = [...lease.unfinished].sort((a, b) => a - b);
    this.#store.batcher.add(() => {
      for (const atomId of atomIds) this.#store.atoms.markRequeued(run.id, lease.subjobId, atomId);
    }, run.id);
    run.requeueFront({ subjobId: lease.subjobId, atomIds, avoidWorkerId: null });
    this.#log.info({ buildId: run.id, subjobId: lease.subjobId, atoms: atomIds.length }, 'requeued unfinished atoms');
  }

  /**
   * subjob_finished arrived: the worker's executor is free for the next subjob at once. The stored lease stays
   * until settle(), after the lease's results are written: removed first, a master that died in between
   * found neither the lease nor the result after its restart, and ran the atom again (issue 15).
   */
  freeExecutor(worker: WorkerEntry, lease: Lease): void {
    worker.leases.delete(lease.id);
    worker.releaseExecutor(lease.executorIndex);
    this.#releaseBuildExecutor(lease);
  }

  /** subjob_finished, after the lease's other messages: whatever has no result runs again. */
  settle(lease: Lease): void {
    if (lease.isRevoked) return;
    const run = this.#runs.get(lease.buildId);
    // The worker stopped early (its atoms were stopped): whatever has no result runs again.
    this.revoke(lease, run?.phase === 'ready');
  }

  /** A lease the worker did not list when it came back: it no longer runs it. */
  drop(worker: WorkerEntry, lease: Lease): void {
    this.revoke(lease, true);
    worker.leases.delete(lease.id);
    worker.releaseExecutor(lease.executorIndex);
  }

  /** The worker is gone: every lease it held is given back, its work requeued. */
  releaseWorker(worker: WorkerEntry): void {
    for (const lease of worker.leases.values()) this.revoke(lease, true);
    worker.leases.clear();
  }

  /** The build ended: its live leases on this worker are revoked (nothing requeued); returns whether it had any. */
  endBuildOn(worker: WorkerEntry, buildId: number): boolean {
    const leases = [...worker.leases.values()].filter((lease) => lease.buildId === buildId && !lease.isRevoked);
    for (const lease of leases) this.revoke(lease, false);
    return leases.length > 0;
  }

  /** The build ended: nothing of it is kept for a worker to resume. */
  forgetBuild(buildId: number): void {
    this.#store.leases.removeBuild(buildId);
    for (const [id, orphan] of this.#orphans) if (orphan.stored.buildId === buildId) this.#orphans.delete(id);
  }

  #releaseBuildExecutor(lease: Lease): void {
    if (lease.hasReleasedBuildExecutor) return;
    lease.hasReleasedBuildExecutor = true;
    if (--lease.buildExecutorHold.holders > 0) return;
    this.#runs.get(lease.buildId)?.releaseBuildExecutor(lease.workerId, lease.buildExecutorIndex);
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
