import type { Logger } from '../../shared/log.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { ArtifactChunkHeader, WorkerMessage } from '../../shared/protocol.ts';
import { atomCommandString } from '../../shared/job-config.ts';
import type { Store } from '../store/index.ts';
import type { Metrics } from '../metrics.ts';
import type { TerminalStatus } from '../model/build-status.ts';
import type { Lease, WorkerEntry } from '../workers/worker-registry.ts';
import type { BuildRun } from './build-run.ts';
import type { BuildSettings } from './build-settings.ts';
import { closeAtomFiles, createArtifactUpload, startAtomFolder } from './atom-files.ts';
import { RunningArchive } from './archive.ts';
import type { Mask } from '../../shared/mask.ts';
import type { LeaseFiles } from './lease-files.ts';
import { atomFolderName, type ResultsLayout } from './results-layout.ts';
import { collectAtomTests } from '../tests/test-reports.ts';
import { attemptStopReason, keepEarlierConsole } from './attempts.ts';

type Message<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;

/**
 * What workers send about atoms, recorded: console output and artifacts to the atom's folder, starts and
 * results to SQLite. Decides a failed atom's retry; says when the build has every result.
 */
/** Atoms awaiting their retry whose failing worker is remembered; past this, the memory starts again. */
const MAX_FAILED_ON = 100_000;
/** SPEC §15's default for suspect_after_failures, for masters built without a conf file (tests). */
const DEFAULT_SUSPECT_AFTER_FAILURES = 3;

export class ResultRecorder {
  readonly #store: Store;
  readonly #settings: BuildSettings;
  readonly #log: Logger;
  readonly #layout: ResultsLayout;
  readonly #metrics: Metrics;
  readonly #runs: ReadonlyMap<number, BuildRun>;
  readonly #files: LeaseFiles;
  readonly #mask: Mask;
  readonly #isBusy: () => boolean;
  readonly #finishInBackground: (run: BuildRun, status: TerminalStatus | 'OUTCOME', errorText?: string) => void;
  /** SPEC §15: the worker each atom being retried last failed on, by build/subjob/atom; bounded by MAX_FAILED_ON. */
  readonly #failedOn = new Map<string, WorkerEntry>();

  constructor(deps: {
    store: Store; settings: BuildSettings; log: Logger; layout: ResultsLayout; metrics: Metrics; runs: ReadonlyMap<number, BuildRun>;
    files: LeaseFiles; finishInBackground: (run: BuildRun, status: TerminalStatus | 'OUTCOME', errorText?: string) => void;
    /** Masks the secret in the archive's clusterrunner_command (issue 10 item 7), as the finisher does. */
    mask: Mask;
    /** Worker messages wait: the running archives wait for them. */
    isBusy: () => boolean;
  }) {
    this.#store = deps.store;
    this.#settings = deps.settings;
    this.#log = deps.log;
    this.#layout = deps.layout;
    this.#metrics = deps.metrics;
    this.#runs = deps.runs;
    this.#files = deps.files;
    this.#mask = deps.mask;
    this.#isBusy = deps.isBusy;
    this.#finishInBackground = deps.finishInBackground;
  }

  async atomStarted(worker: WorkerEntry, lease: Lease, message: Message<'atom_started'>): Promise<void> {
    const run = this.#runs.get(lease.buildId);
    if (!run || !lease.unfinished.has(message.atom_id)) return;
    const attempt = run.countAttempt(lease.subjobId, message.atom_id);
    const dir = this.#layout.atomDir(run.id, lease.subjobId, message.atom_id);
    // The attempt before keeps its console output (SPEC §10); without it the new attempt still runs.
    await keepEarlierConsole(this.#layout, run.id, lease.subjobId, message.atom_id, attempt).catch((error: unknown) =>
      this.#log.warn({ buildId: run.id, subjobId: lease.subjobId, atomId: message.atom_id, err: error }, 'could not keep the console output of the attempt before'));
    this.#files.setConsole(lease.id, message.atom_id, await startAtomFolder(dir, this.#settings.maxConsoleBytes, attempt === 1));
    const startedS = Date.now() / 1000;
    this.#store.batcher.add(() => {
      this.#store.atoms.markStarted(run.id, lease.subjobId, message.atom_id, worker.name);
      this.#store.attempts.started(run.id, lease.subjobId, message.atom_id, attempt, worker.name, startedS);
    }, run.id);
    this.#store.events.append('ATOM_START', {
      build_id: run.id, subjob_id: lease.subjobId, atom_id: message.atom_id, worker: worker.name, attempt,
    });
  }

  atomOutput(lease: Lease, message: Message<'atom_output'>): void {
    this.#files.console(lease.id, message.atom_id)?.write(message.data);
  }

  async artifactChunk(lease: Lease, header: ArtifactChunkHeader, bytes: Buffer): Promise<void> {
    if (!lease.unfinished.has(header.atom_id)) return;
    const upload = this.#files.upload(lease.id, header.atom_id, () =>
      createArtifactUpload(this.#layout.atomDir(lease.buildId, lease.subjobId, header.atom_id), {
        maxBytes: this.#settings.maxArtifactBytes, maxEntries: this.#settings.maxArtifactFiles,
      }));
    if (bytes.length > 0) await upload.write(bytes);
    if (header.final) await upload.finish().catch(() => undefined);
  }

  /**
   * SPEC §15: an atom passed on `worker`. That ends `worker`'s row of failures passing elsewhere; if the atom
   * had failed on another worker, that one's row grows, and at suspect_after_failures it becomes suspect.
   */
  #judgeWorkers(worker: WorkerEntry, key: string, buildId: number): void {
    worker.failuresPassedElsewhere = 0;
    const failedOn = this.#failedOn.get(key);
    this.#failedOn.delete(key);
    if (!failedOn || failedOn === worker || failedOn.failureSuspicion !== null) return;
    failedOn.failuresPassedElsewhere += 1;
    if (failedOn.failuresPassedElsewhere < (this.#settings.suspectAfterFailures ?? DEFAULT_SUSPECT_AFTER_FAILURES)) return;
    failedOn.failureSuspicion = `failures_passed_elsewhere: ${failedOn.failuresPassedElsewhere} atoms in a row failed here and passed on other workers`;
    this.#store.workers.setSuspicion(failedOn.name, failedOn.failureSuspicion);
    this.#log.warn({ workerId: failedOn.id, buildId }, 'worker is suspect: its failed atoms passed on other workers');
    this.#store.events.append('WORKER_SUSPECT', {
      worker_id: failedOn.id, worker: failedOn.name, build_id: buildId, reason: failedOn.failureSuspicion,
    });
    this.#metrics.workersSuspectTotal.inc();
  }

  async atomFinished(worker: WorkerEntry, lease: Lease, message: Message<'atom_finished'>): Promise<void> {
    const run = this.#runs.get(lease.buildId);
    if (!run || run.phase === 'finishing' || !lease.unfinished.has(message.atom_id)) return;
    const atomId = message.atom_id;
    const { console, upload } = this.#files.take(lease.id, atomId);
    const atom = run.atoms[lease.subjobId]![atomId]!;
    const dir = this.#layout.atomDir(run.id, lease.subjobId, atomId);
    let exitCode: number;
    try {
      exitCode = await closeAtomFiles({ dir, console, upload, hasArtifacts: message.has_artifacts, exitCode: message.exit_code });
    } catch (error) {
      // Without its files the result cannot be trusted, and running the atom again would most likely meet
      // the same full disk: the build ends in ERROR, saying why, rather than SUCCESS with output missing.
      this.#log.error({ buildId: run.id, subjobId: lease.subjobId, atomId, err: error }, 'could not store atom result');
      this.#finishInBackground(run, 'ERROR', `The master could not store the output of atom ${atomFolderName(lease.subjobId, atomId)} ` +
        `in ${dir}: ${errorMessage(error)}. Is the master's disk full?`);
      return;
    }
    if (lease.isRevoked || run.phase !== 'ready' || !lease.unfinished.delete(atomId)) return;
    const attempt = run.attemptsOf(lease.subjobId, atomId);
    // Reports come only with artifacts; a later attempt without any still supersedes the tests of the one before.
    // A first attempt without artifacts has nothing to read: skipping it saves a folder walk per atom (issue 18).
    if (message.has_artifacts || attempt > 1) {
      collectAtomTests({ db: this.#store.db, log: this.#log }, { buildId: run.id, subjobId: lease.subjobId, atomId, attempt, dir, jobKey: run.job!.timingKey });
    }
    const attemptResult = { exitCode, stopReason: attemptStopReason(message.stop_reason), finishedS: Date.now() / 1000 };
    // `retries` counts within one round: a retry asked through the API (retry.ts) starts a new round.
    // An atom stopped by atom_timeout failed like any other and is retried too (issue 15 item 5); one stopped by
    // a cancel or a lost lease is not a failure of the atom (those are requeued or ended elsewhere).
    const isFailure = exitCode !== 0 && (message.stop_reason === null || message.stop_reason === 'timeout');
    if (isFailure && attempt - run.retryRoundStart(lease.subjobId, atomId) <= run.job!.retries) {
      // No child logger per result: pino serialises its bindings at once, and only a retry logs here.
      this.#log.info({ buildId: run.id, subjobId: lease.subjobId, atomId, workerId: worker.id, exitCode, attempt, stopReason: message.stop_reason },
        'atom failed; retrying it');
      this.#store.batcher.add(() => {
        this.#store.atoms.markRetrying(run.id, lease.subjobId, atomId);
        this.#store.attempts.finished(run.id, lease.subjobId, atomId, attempt, attemptResult);
      }, run.id);
      this.#store.events.append('ATOM_ATTEMPT_FAILED', {
        build_id: run.id, subjob_id: lease.subjobId, atom_id: atomId, attempt, exit_code: exitCode, time: message.time_s, worker: worker.name,
        stop_reason: message.stop_reason,
      });
      if (this.#failedOn.size >= MAX_FAILED_ON) this.#failedOn.clear(); // only suspicion is lost, never a result
      this.#failedOn.set(`${run.id}/${lease.subjobId}/${atomId}`, worker);
      run.requeueFront({ subjobId: lease.subjobId, atomIds: [atomId], avoidWorkerId: worker.id });
      return;
    }
    run.noteAtomTime(message.time_s);
    this.#store.batcher.add(() => {
      this.#store.atoms.markFinished(run.id, lease.subjobId, atomId, exitCode, message.time_s, message.stop_reason);
      this.#store.attempts.finished(run.id, lease.subjobId, atomId, attempt, attemptResult);
    }, run.id);
    this.#store.events.append('ATOM_FINISH', {
      build_id: run.id, subjob_id: lease.subjobId, atom_id: atomId, exit_code: exitCode, time: message.time_s, worker: worker.name, attempt,
    });
    this.#store.events.append('MASTER_RECEIVED_RESULT', { build_id: run.id, subjob_id: lease.subjobId, atom_id: atomId, worker: worker.name });
    if (exitCode === 0) this.#judgeWorkers(worker, `${run.id}/${lease.subjobId}/${atomId}`, run.id);
    else this.#failedOn.delete(`${run.id}/${lease.subjobId}/${atomId}`);
    this.#metrics.atomsTotal.inc({ result: exitCode === 0 ? 'success' : 'failure' });
    const atomString = atomCommandString(atom.variable, atom.value);
    if (message.stop_reason === null || message.stop_reason === 'timeout') {
      this.#store.timings.record(run.job!.timingKey, atomString, message.time_s, run.id);
    }
    // Its folder is final: into the archives now, not all of them after the last atom (archive.ts).
    run.archive ??= new RunningArchive({
      artifactsDir: this.#layout.artifactsDir(run.id), tarGzPath: this.#layout.tarGz(run.id), zipPath: this.#layout.zip(run.id),
    }, run.atoms.map((atoms) => atoms.length), this.#isBusy);
    run.archive.atomDone({
      subjobId: lease.subjobId, atomId, command: this.#mask(`${atomString} ${run.job!.command}`), exitCode, timeS: message.time_s,
    });
    if (run.completeAtom(lease.subjobId, atomId)) {
      const completed = run.completedSubjobs;
      this.#store.batcher.add(() => {
        this.#store.atoms.setSubjobState(run.id, lease.subjobId, 'COMPLETED');
        this.#store.builds.setCompletedSubjobs(run.id, completed);
      }, run.id);
    }
    if (run.remainingAtoms === 0) this.#finishInBackground(run, 'OUTCOME');
  }
}
