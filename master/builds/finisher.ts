import { mkdir, rm } from 'node:fs/promises';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Logger } from '../../shared/log.ts';
import { errorMessage } from '../../shared/errors.ts';
import { atomCommandString } from '../../shared/job-config.ts';
import type { Store } from '../store/index.ts';
import type { Metrics } from '../metrics.ts';
import type { TerminalStatus } from '../model/build-status.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import type { BuildRun } from './build-run.ts';
import { writeBuildArchives, type AtomResultFiles } from './archive.ts';
import type { LeaseBook } from './lease-book.ts';
import type { ProjectSnapshots } from './project-snapshot.ts';
import { atomFolderName, type ResultsLayout } from './results-layout.ts';
import { moveBuildStatus } from './status-writer.ts';
import { settleBuildTests } from '../tests/test-reports.ts';
import type { WorkerSetups } from './worker-setups.ts';
import type { Mask } from '../../shared/mask.ts';

/** Atoms the finisher reads per turn of the event loop. */
const RESULTS_PAGE_ATOMS = 5000;

/** 'OUTCOME': every atom has its result; the build is FAILURE when any failed, else SUCCESS. */
export type FinishStatus = TerminalStatus | 'OUTCOME';

/**
 * The one way a build ends. Dispatch stops at once and running work is stopped (cancel/error); then the
 * archive of every finished atom is completed (most are in it already: archive.ts, RunningArchive), and only
 * then is the status made terminal, so a client that sees a terminal build can always download its
 * artifacts. Last, the run leaves memory.
 */
export class Finisher {
  readonly #mask: Mask;
  readonly #store: Store;
  readonly #log: Logger;
  readonly #layout: ResultsLayout;
  readonly #metrics: Metrics;
  readonly #registry: WorkerRegistry;
  readonly #leases: LeaseBook;
  readonly #setups: WorkerSetups;
  readonly #snapshots: ProjectSnapshots;
  readonly #checkoutDir: (buildId: number) => string;
  readonly #stopDispatch: (run: BuildRun) => void;
  readonly #finished: (run: BuildRun) => void;
  readonly #finishing = new Set<Promise<void>>();
  readonly #byBuild = new Map<number, Promise<void>>();

  constructor(deps: {
    /** Masks the secret in what the archive shows (issue 10 item 7): an atom string may carry it. */
    mask: Mask;
    store: Store; log: Logger; layout: ResultsLayout; metrics: Metrics; registry: WorkerRegistry; leases: LeaseBook; setups: WorkerSetups;
    snapshots: ProjectSnapshots; checkoutDir: (buildId: number) => string;
    /** The run leaves the dispatch list. */
    stopDispatch: (run: BuildRun) => void;
    /** The run is terminal and archived: it leaves memory. */
    finished: (run: BuildRun) => void;
  }) {
    this.#store = deps.store;
    this.#log = deps.log;
    this.#layout = deps.layout;
    this.#metrics = deps.metrics;
    this.#registry = deps.registry;
    this.#leases = deps.leases;
    this.#setups = deps.setups;
    this.#snapshots = deps.snapshots;
    this.#checkoutDir = deps.checkoutDir;
    this.#mask = deps.mask;
    this.#stopDispatch = deps.stopDispatch;
    this.#finished = deps.finished;
  }

  finishInBackground(run: BuildRun, status: FinishStatus, errorText: string | null = null): void {
    const done = this.finish(run, status, errorText).catch((error: unknown) => {
      this.#log.error({ buildId: run.id, err: error }, 'finishing the build failed');
    });
    this.#finishing.add(done);
    void done.finally(() => this.#finishing.delete(done));
  }

  /** Waits for the builds being finished (the master is closing). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#finishing]);
  }

  /** The end of the build being finished now, or null: a retry waits for it to leave memory (retry.ts). */
  whenFinished(buildId: number): Promise<void> | null {
    return this.#byBuild.get(buildId) ?? null;
  }

  async finish(run: BuildRun, requested: FinishStatus, errorText: string | null): Promise<void> {
    if (run.phase === 'finishing') return;
    const done = this.#finish(run, requested, errorText);
    const settled = done.catch(() => undefined);
    this.#byBuild.set(run.id, settled);
    void settled.finally(() => {
      if (this.#byBuild.get(run.id) === settled) this.#byBuild.delete(run.id);
    });
    return done;
  }

  async #finish(run: BuildRun, requested: FinishStatus, errorText: string | null): Promise<void> {
    const status = requested === 'OUTCOME' ? this.#outcome(run) : requested;
    run.enterPhase('finishing');
    run.abort.abort();
    this.#stopDispatch(run);
    run.clearPendingWork();
    this.#leases.forgetBuild(run.id);
    for (const worker of this.#registry.all()) this.#setups.endBuild(worker, run.id, this.#leases.endBuildOn(worker, run.id));
    this.#store.batcher.flush();
    // Attempts still running stop with the build (SPEC §10).
    this.#store.attempts.closeOpen(run.id, 'canceled', Date.now() / 1000);
    let finalStatus = status;
    let finalError = errorText;
    const failures = this.#store.atoms.listFailedAtoms(run.id).map((atom) => atomFolderName(atom.subjobId, atom.id));
    try {
      await mkdir(this.#layout.artifactsDir(run.id), { recursive: true });
      const archive = {
        artifactsDir: this.#layout.artifactsDir(run.id),
        tarGzPath: this.#layout.tarGz(run.id),
        zipPath: this.#layout.zip(run.id),
        results: await this.#atomResults(run),
        failures,
      };
      // Most atoms are in the archives already (archive.ts, RunningArchive); should that have failed, write
      // them again from the start, which reports its own failure.
      const running = run.archive;
      run.archive = null;
      const isWritten = running !== null && await running.finish(archive.results, archive.failures).then(() => true, (error: unknown) => {
        this.#log.warn({ buildId: run.id, err: error }, 'writing the archive while the build ran failed; writing it again');
        return false;
      });
      if (!isWritten) await writeBuildArchives(archive);
      this.#store.builds.setArtifactsReady(run.id);
    } catch (error) {
      this.#log.error({ buildId: run.id, err: error }, 'could not write the artifact archive');
      // Never SUCCESS (or FAILURE) with artifacts missing: the user could not see what ran.
      if (finalStatus === 'SUCCESS' || finalStatus === 'FAILURE') {
        finalStatus = 'ERROR';
        finalError = `The build's atoms finished but its artifact archive could not be written: ${errorMessage(error)}`;
      }
    }
    // A client that sees the build terminal sees all its test results (SPEC §15).
    await settleBuildTests(this.#store.db, run.id);
    moveBuildStatus(this.#store, run, finalStatus, finalError);
    this.#store.events.append('BUILD_FINISHED', { build_id: run.id, status: finalStatus });
    // The project copies were for preparing and for workers setting up; neither happens any more.
    await this.#snapshots.forget(run.id, this.#layout.snapshot(run.id)).catch(() => undefined);
    if (run.request.type === 'git') await rm(this.#checkoutDir(run.id), { recursive: true, force: true }).catch(() => undefined);
    this.#store.batcher.flush();
    const record = this.#store.builds.get(run.id);
    this.#metrics.buildsTotal.inc({ status: finalStatus });
    const queued = record?.stateTimestamps['queued'];
    if (queued !== undefined) this.#metrics.buildDuration.observe(Date.now() / 1000 - queued);
    this.#log.info({ buildId: run.id, status: finalStatus }, 'build finished');
    this.#finished(run);
  }

  #outcome(run: BuildRun): TerminalStatus {
    this.#store.batcher.flush();
    return this.#store.atoms.listFailedAtoms(run.id).length > 0 ? 'FAILURE' : 'SUCCESS';
  }

  /**
   * Every accepted result of the build, as the archive writes it (SPEC §7), read a page per turn of the event
   * loop: all at once, a build of 100,000 atoms held the master some 300 ms at its end (issue 18).
   */
  async #atomResults(run: BuildRun): Promise<AtomResultFiles[]> {
    const command = run.job?.command ?? '';
    const results: AtomResultFiles[] = [];
    for (let after: { subjobId: number; atomId: number } | null = null; ;) {
      const page = this.#store.atoms.listBuildAtomsAfter(run.id, after, RESULTS_PAGE_ATOMS);
      for (const atom of page) {
        if (atom.state !== 'COMPLETED' || atom.exitCode === null) continue;
        results.push({
          subjobId: atom.subjobId,
          atomId: atom.id,
          command: this.#mask(`${atomCommandString(atom.variable, atom.value)} ${command}`),
          exitCode: atom.exitCode,
          timeS: atom.actualTime ?? 0,
        });
      }
      if (page.length < RESULTS_PAGE_ATOMS) return results;
      const last = page[page.length - 1]!;
      after = { subjobId: last.subjobId, atomId: last.id };
      await nextTurn();
    }
  }
}
