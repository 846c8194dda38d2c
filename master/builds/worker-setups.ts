import type { Logger } from '../../shared/log.ts';
import type { WorkerMessage } from '../../shared/protocol.ts';
import type { Store } from '../store/index.ts';
import { transitionWorkerBuild, type WorkerBuildStep } from '../model/worker-build-state.ts';
import type { TerminalStatus } from '../model/build-status.ts';
import type { WorkerEntry, WorkerRegistry } from '../workers/worker-registry.ts';
import type { BuildRun } from './build-run.ts';
import type { BuildSettings } from './build-settings.ts';
import { moveBuildStatus } from './status-writer.ts';

type Message<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;

/** Setup may fail on this many workers in all before the build gives up (SPEC §5). */
const MAX_SETUP_FAILURES = 3;

/**
 * Each worker's state per build (model/worker-build-state.ts): setup, teardown, and what a worker does
 * with a build that ended. The only writer of WorkerEntry.builds.
 */
export class WorkerSetups {
  readonly #store: Store;
  readonly #settings: BuildSettings;
  readonly #log: Logger;
  readonly #registry: WorkerRegistry;
  readonly #runs: ReadonlyMap<number, BuildRun>;
  readonly #finishInBackground: (run: BuildRun, status: TerminalStatus, errorText: string) => void;

  constructor(deps: {
    store: Store; settings: BuildSettings; log: Logger; registry: WorkerRegistry; runs: ReadonlyMap<number, BuildRun>;
    finishInBackground: (run: BuildRun, status: TerminalStatus, errorText: string) => void;
  }) {
    this.#store = deps.store;
    this.#settings = deps.settings;
    this.#log = deps.log;
    this.#registry = deps.registry;
    this.#runs = deps.runs;
    this.#finishInBackground = deps.finishInBackground;
  }

  #move(worker: WorkerEntry, buildId: number, to: WorkerBuildStep): void {
    transitionWorkerBuild(`worker ${worker.id}, build ${buildId}`, worker.builds.get(buildId) ?? 'absent', to);
    if (to === 'absent') worker.builds.delete(buildId);
    else worker.builds.set(buildId, to);
  }

  startSetup(run: BuildRun, worker: WorkerEntry): void {
    const job = run.job!;
    this.#move(worker, run.id, 'setting_up');
    if (run.status !== 'BUILDING') moveBuildStatus(this.#store, run, 'BUILDING');
    this.#store.events.append('BUILD_SETUP_START', { build_id: run.id, worker_id: worker.id, worker: worker.name });
    worker.send({
      type: 'setup_build',
      build_id: run.id,
      project: job.project,
      snapshot_path: `/v1/build/${run.id}/project.tar.gz`,
      remote_files: job.remoteFiles,
      setup_command: job.setupCommand,
      teardown_command: job.teardownCommand,
      ...(job.junit === undefined ? {} : { junit: [...job.junit] }),
      command: job.command,
      atom_timeout_ms: job.atomTimeoutMs,
      kill_grace_ms: this.#settings.killGraceMs,
      max_console_bytes: this.#settings.maxConsoleBytes,
    });
  }

  /** A lease resumed after a master restart: the worker set the build up before, and still has it. */
  adopted(worker: WorkerEntry, buildId: number): void {
    if (worker.builds.get(buildId) !== 'ready') this.#move(worker, buildId, 'ready');
  }

  setupFinished(worker: WorkerEntry, message: Message<'setup_finished'>): void {
    const run = this.#runs.get(message.build_id);
    if (worker.builds.get(message.build_id) !== 'setting_up') return;
    this.#store.events.append('BUILD_SETUP_FINISH', {
      build_id: message.build_id, worker_id: worker.id, worker: worker.name, ok: message.ok, exit_code: message.exit_code,
    });
    if (!run || run.phase !== 'ready') {
      // The build ended while this worker set it up: undo the setup.
      if (message.ok) this.teardown(worker, message.build_id);
      else this.#move(worker, message.build_id, 'absent');
      return;
    }
    if (message.ok) {
      this.#move(worker, run.id, 'ready');
      return;
    }
    this.#move(worker, run.id, 'failed');
    run.setupFailures++;
    this.#log.warn({ buildId: run.id, workerId: worker.id, exitCode: message.exit_code }, 'setup failed on worker');
    const othersStillTrying = [...this.#registry.all()].some((other) =>
      other.isAlive && (other.builds.get(run.id) === 'ready' || other.builds.get(run.id) === 'setting_up'));
    if (run.setupFailures >= MAX_SETUP_FAILURES || !othersStillTrying) {
      const text = `Setup of the build failed on worker ${worker.name} (exit code ${message.exit_code ?? 'none'})` +
        `${run.setupFailures > 1 ? `, after failing on ${run.setupFailures} workers in all` : ''}. ` +
        `Last lines of the setup output:\n${message.output_tail}`;
      this.#finishInBackground(run, 'ERROR', text);
    }
  }

  teardownFinished(worker: WorkerEntry, message: Message<'teardown_finished'>): void {
    if (worker.builds.get(message.build_id) === 'tearing_down') this.#move(worker, message.build_id, 'absent');
    this.#store.events.append('BUILD_TEARDOWN_FINISH', {
      build_id: message.build_id, worker_id: worker.id, worker: worker.name, ok: message.ok, exit_code: message.exit_code,
      output_tail: message.output_tail,
    });
    const log = this.#log.child({ buildId: message.build_id, workerId: worker.id });
    if (message.ok) log.info('teardown finished');
    else log.warn({ exitCode: message.exit_code, output: message.output_tail }, 'teardown failed');
  }

  /** Teardown once the worker has nothing of the build running and the build has nothing left to give. */
  maybeTeardown(worker: WorkerEntry, buildId: number): void {
    if (worker.builds.get(buildId) !== 'ready') return;
    for (const lease of worker.leases.values()) if (lease.buildId === buildId) return;
    const run = this.#runs.get(buildId);
    if (run && run.phase === 'ready' && run.hasPendingWork) return;
    this.teardown(worker, buildId);
  }

  teardown(worker: WorkerEntry, buildId: number): void {
    this.#move(worker, buildId, 'tearing_down');
    worker.send({ type: 'teardown_build', build_id: buildId });
  }

  /** The build ended: workers still running it stop now, those set up tear down, failed setups are forgotten. */
  endBuild(worker: WorkerEntry, buildId: number, hadLeases: boolean): void {
    const state = worker.builds.get(buildId);
    if (hadLeases || state === 'setting_up') {
      // Stop now: atoms still running belong to a build that has ended (cancel, or an error elsewhere).
      worker.send({ type: 'cancel_build', build_id: buildId });
      if (state !== 'tearing_down') this.#move(worker, buildId, 'tearing_down');
    } else if (state === 'ready') {
      this.teardown(worker, buildId);
    } else if (state === 'failed') {
      this.#move(worker, buildId, 'absent');
    }
  }

  /** The worker is gone: it holds nothing of any build any more. */
  forgetWorker(worker: WorkerEntry): void {
    for (const buildId of [...worker.builds.keys()]) this.#move(worker, buildId, 'absent');
  }
}
