import type { Logger } from '../../shared/log.ts';
import type { RegisterMessage, SubjobRefusedMessage, WorkerMessage } from '../../shared/protocol.ts';
import type { Store } from '../store/index.ts';
import { transitionWorkerBuild, type WorkerBuildStep } from '../model/worker-build-state.ts';
import type { TerminalStatus } from '../model/build-status.ts';
import type { WorkerEntry, WorkerRegistry } from '../workers/worker-registry.ts';
import type { BuildRun } from './build-run.ts';
import type { BuildSettings } from './build-settings.ts';
import { moveBuildStatus } from './status-writer.ts';
import { withEnvironment } from '../model/stored-job.ts';

type Message<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;

/** Setup may fail on this many workers in all before the build gives up (SPEC §5). */
const MAX_SETUP_FAILURES = 3;
/**
 * Refused subjobs a build bears, all workers together, before it ends ERROR with the reason. With the
 * registration saying which builds a worker has set up, a refusal is a rare race; a run of them is a bug or
 * a broken worker, and must not spin (issue 15: 5,000 refusals a second).
 */
export const MAX_REFUSALS = 10;
/** A worker that refused a build's subjob gets none of that build for 1 s, doubling per refusal up to 30 s. */
export function refusalBackoffMs(count: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, count - 1));
}

type ReportedBuild = NonNullable<RegisterMessage['builds']>[number];

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
      // build -e variables go in front of each command: the worker needs nothing new to run them.
      setup_command: job.setupCommand === null ? null : withEnvironment(job.setupCommand, job.environment),
      teardown_command: job.teardownCommand === null ? null : withEnvironment(job.teardownCommand, job.environment),
      ...(job.junit === undefined ? {} : { junit: [...job.junit] }),
      command: withEnvironment(job.command, job.environment),
      atom_timeout_ms: job.atomTimeoutMs,
      kill_grace_ms: this.#settings.killGraceMs,
      max_console_bytes: this.#settings.maxConsoleBytes,
    });
  }

  /** A lease resumed after a master restart: the worker set the build up before, and still has it. */
  adopted(worker: WorkerEntry, buildId: number): void {
    if (worker.builds.get(buildId) !== 'ready') this.#move(worker, buildId, 'ready');
  }

  /**
   * The worker (re)registered and said which builds it has set up: that is the answer from now on (issue 15).
   * A build it no longer has is set up again before it gets work of it; one it has and the master still
   * runs is used as it is; one the master is done with (or never knew) is torn down there.
   */
  reconcile(worker: WorkerEntry, reported: readonly ReportedBuild[]): void {
    const setups = new Map(reported.map((build) => [build.build_id, build.setup]));
    for (const [buildId, state] of [...worker.builds]) {
      // Failed stays failed: the build does not try that worker again.
      if (!setups.has(buildId) && state !== 'failed') this.#move(worker, buildId, 'absent');
    }
    for (const [buildId, setup] of setups) {
      const run = this.#runs.get(buildId);
      const state = worker.builds.get(buildId);
      if (state === 'tearing_down' || state === 'failed' || !run || run.phase !== 'ready') {
        // Said again: a teardown_build sent while it was away went nowhere.
        if (state !== 'tearing_down') this.#forceState(worker, buildId, 'tearing_down');
        worker.send({ type: 'teardown_build', build_id: buildId });
        continue;
      }
      const wanted = setup === 'ok' ? 'ready' : 'setting_up';
      if (state !== wanted) this.#forceState(worker, buildId, wanted);
    }
  }

  /** Moves through absent when there is no direct edge: the worker's report overrides what the master thought. */
  #forceState(worker: WorkerEntry, buildId: number, to: 'ready' | 'setting_up' | 'tearing_down'): void {
    if (worker.builds.has(buildId)) this.#move(worker, buildId, 'absent');
    this.#move(worker, buildId, to);
  }

  /**
   * The worker refused a subjob (the build is not set up there): it is set up again before more work goes
   * there, after a back-off that doubles with each refusal; past MAX_REFUSALS in all the build ends ERROR.
   */
  refused(worker: WorkerEntry, message: SubjobRefusedMessage): void {
    const buildId = message.build_id;
    const state = worker.builds.get(buildId);
    if (state === 'ready' || state === 'setting_up') this.#move(worker, buildId, 'absent');
    const run = this.#runs.get(buildId);
    if (!run || run.phase !== 'ready') return;
    run.refusals++;
    const count = (worker.refusals.get(buildId)?.count ?? 0) + 1;
    const backoffMs = refusalBackoffMs(count);
    worker.refusals.set(buildId, { count, untilMs: Date.now() + backoffMs });
    this.#log.warn({ buildId, workerId: worker.id, reason: message.reason, refusals: run.refusals, backoffMs }, 'worker refused a subjob; backing off');
    if (run.refusals >= MAX_REFUSALS) {
      this.#finishInBackground(run, 'ERROR', `Workers refused subjobs of this build ${run.refusals} times ` +
        `(last: worker ${worker.name}, reason ${message.reason}: the build is not set up there); giving up rather than loop.`);
    }
  }

  setupFinished(worker: WorkerEntry, message: Message<'setup_finished'>): void {
    const run = this.#runs.get(message.build_id);
    if (worker.builds.get(message.build_id) !== 'setting_up') {
      // A setup the worker finished while the master had lost track of it (a reconnection in between).
      if (message.ok && !worker.builds.has(message.build_id)) {
        if (run && run.phase === 'ready') this.#move(worker, message.build_id, 'ready');
        else this.teardown(worker, message.build_id);
      }
      return;
    }
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
    // A draining worker sets nothing up any more (one sent a setup before the master heard of its drain ignores it).
    const othersStillTrying = [...this.#registry.all()].some((other) =>
      other.isAlive && (other.builds.get(run.id) === 'ready' || (other.builds.get(run.id) === 'setting_up' && !other.isDraining)));
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

  /**
   * Teardown once the worker has nothing of the build running and the build has no atom left without its
   * result. Not merely "nothing pending now": atoms held for a worker after a restart, or running elsewhere,
   * may come back to the queue, and a worker torn down would then set the build up a second time (issue 15).
   */
  maybeTeardown(worker: WorkerEntry, buildId: number): void {
    if (worker.builds.get(buildId) !== 'ready') return;
    for (const lease of worker.leases.values()) if (lease.buildId === buildId) return;
    const run = this.#runs.get(buildId);
    if (run && run.phase === 'ready' && run.remainingAtoms > 0) return;
    this.teardown(worker, buildId);
  }

  teardown(worker: WorkerEntry, buildId: number): void {
    this.#move(worker, buildId, 'tearing_down');
    worker.refusals.delete(buildId);
    worker.send({ type: 'teardown_build', build_id: buildId });
  }

  /** The build ended: workers still running it stop now, those set up tear down, failed setups are forgotten. */
  endBuild(worker: WorkerEntry, buildId: number, hadLeases: boolean): void {
    worker.refusals.delete(buildId);
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
    worker.refusals.clear();
  }
}
