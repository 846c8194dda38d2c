import { randomUUID } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../shared/log.ts';
import { startLogRotation, type LogRotation } from '../shared/log.ts';
import { WorkerDiskBound } from './disk-bounds.ts';
import { WorkerHealth } from './health.ts';
import { commandEnvironment, type Conf } from '../shared/conf.ts';
import { errorMessage } from '../shared/errors.ts';
import { createMask, credentialValuesOf, type Mask } from '../shared/mask.ts';
import { OutputTail } from '../shared/output-tail.ts';
import { MARKER_VARIABLE, killMarkedProcessesUntilGone, type RunAsUser, spawnShell, type GroupProcess, type StopReason } from '../shared/process.ts';
import { PROTOCOL_VERSION, type MasterMessage, type RegisterMessage, type SetupBuildMessage, type RunSubjobMessage } from '../shared/protocol.ts';
import { MasterConnection, type ReceivedOutput } from './connection.ts';
import { OutputRecord, outputKey } from './output-record.ts';
import { runSubjob, type BuildContext } from './executor.ts';
import { Spawner, spawnerAvailable } from '../shared/spawner.ts';
import { prepareWorkspace, type WorkspaceDeps } from './workspace.ts';
import { downloadSnapshot } from './snapshot.ts';
import { handOver, resolveRunAs, userEnvironment } from './run-as.ts';
import { GitCache } from '../shared/git.ts';
import { downloadRemoteFiles } from '../shared/remote-files.ts';

/** The configuration a worker runs with (SPEC §8), plus its name and logger. */
export type WorkerConf = Pick<Conf,
  'masterUrl' | 'secret' | 'numExecutors' | 'baseDirectory' | 'heartbeatIntervalMs' | 'heartbeatFailureThreshold' |
  'masterUnreachableMs' | 'killGraceMs' | 'allowLocalRepositories' | 'gitTimeoutMs' | 'maxSnapshotBytes' | 'maxRemoteFileBytes' |
  'remoteFileTimeoutMs' | 'maxWorkspaceBytes' | 'minDiskFreeBytes' | 'logMaxBytes' | 'logKeepFiles'>;

export interface DaemonOptions extends WorkerConf {
  /** Conf run_as_user: build commands run as this user (the worker must run as root); default: ours. */
  readonly runAsUser?: string | null;
  /** The pool this worker says it belongs to (`--pool`, SPEC §13); default none. */
  readonly pool?: string | null;
  /** Conf labels / --labels (SPEC §13), sent at registration; default none. */
  readonly labels?: readonly string[];
  /** Conf health_check_command (worker/health.ts); default none. */
  readonly healthCheckCommand?: string | null;
  /** Conf health_check_interval_seconds in ms; default 30 s. */
  readonly healthCheckIntervalMs?: number;
  /** Conf command_nice: how far below the worker's CPU priority its commands run; default 0 (the same). */
  readonly commandNice?: number;
  readonly name: string;
  readonly log: Logger;
}

interface RunningSubjob {
  readonly buildId: number;
  readonly subjobId: number;
  readonly abort: AbortController;
  readonly done: Promise<void>;
  /** hasStarted is false while it waits behind the subjob its executor runs (the master sent it ahead). */
  readonly progress: { hasStarted: boolean };
}

/** A build as this worker knows it: set up (or being set up), running subjobs, torn down at the end. */
interface WorkerBuild {
  readonly message: SetupBuildMessage;
  readonly marker: string;
  /** Masks the secret and the build's credentials in everything sent to the master about it. */
  readonly mask: Mask;
  /** Stops a setup still fetching the project or downloading files (cancel, shutdown). */
  readonly abort: AbortController;
  context: BuildContext | null;
  ownedDir: string | null;
  setup: 'running' | 'ok' | 'failed';
  setupProcess: GroupProcess | null;
  /** Settles once the setup has reported, its stopped processes swept: a teardown must not start before. */
  setupDone: Promise<void>;
  isTearingDown: boolean;
  wantsTeardown: boolean;
}

const TAIL_BYTES = 32 * 1024;

/** A worker process's own folder under `<base_directory>/worker`: `<pid>-<first 8 characters of its session id>`. */
const WORK_DIR_NAME = /^(\d+)-([0-9a-f]{8})$/;

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but is not ours.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A worker killed with SIGKILL (or by the OOM killer) cannot stop its commands: each runs in a process group of
 * its own, so they go on, orphaned, holding files and CPU. The next worker started on the same base directory
 * ends them. A dead worker is known by its folder (named after its pid, which no longer runs); its atoms by
 * their ARTIFACT_DIR inside that folder, its setup and teardown commands by their marker, which holds its
 * session id. Returns how many processes were killed; where there is no /proc, none.
 */
async function killOrphansOfDeadWorkers(workRoot: string): Promise<number> {
  const deadDirs: string[] = [];
  const deadSessions: string[] = [];
  for (const name of await readdir(workRoot).catch(() => [] as string[])) {
    const match = WORK_DIR_NAME.exec(name);
    if (!match || Number(match[1]) === process.pid || isProcessAlive(Number(match[1]))) continue;
    deadDirs.push(join(workRoot, name));
    deadSessions.push(match[2]!);
  }
  if (deadDirs.length === 0) return 0;
  const artifactPrefixes = deadDirs.map((dir) => `ARTIFACT_DIR=${dir}/`);
  const setupMarker = new RegExp(`^${MARKER_VARIABLE}=cr-build-\\d+-(${deadSessions.join('|')})`);
  let killed = 0;
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const environ = await readFile(`/proc/${entry}/environ`, 'latin1').catch(() => '');
    const isOrphan = environ.split('\0').some((variable) =>
      artifactPrefixes.some((prefix) => variable.startsWith(prefix)) || setupMarker.test(variable));
    if (!isOrphan) continue;
    try {
      process.kill(Number(entry), 'SIGKILL');
      killed++;
    } catch {
      // Gone meanwhile, or not ours.
    }
  }
  // Their artifacts and project copies are worth nothing now; the orphans that wrote there are gone.
  await Promise.allSettled(deadDirs.map((dir) => rm(dir, { recursive: true, force: true })));
  return killed;
}

/**
 * The worker process's logic: takes the master's messages, sets builds up, runs subjobs on its executors,
 * tears builds down, and drains on request. `exited` resolves with the process exit code.
 */
export class WorkerDaemon {
  readonly #options: DaemonOptions;
  readonly #log: Logger;
  readonly #sessionId = randomUUID();
  readonly #connection: MasterConnection;
  readonly #builds = new Map<number, WorkerBuild>();
  readonly #running = new Map<string, RunningSubjob>();
  readonly #teardownProcesses = new Set<GroupProcess>();
  #isStoppingNow = false;
  #skipTeardowns = false;
  /** Per executor index: settles when every subjob given to that executor has ended. */
  readonly #executorTails = new Map<number, Promise<void>>();
  /** The output records of the atoms running here, to send again what a master did not get (output-record.ts). */
  readonly #outputs = new Map<string, OutputRecord>();
  readonly #workDir: string;
  /** run_as_user, resolved at start. */
  #runAs: RunAsUser | null = null;
  readonly #git: GitCache;
  /** Old workspaces and repository caches within max_workspace_bytes; disk pressure as a state (disk-bounds.ts). */
  readonly #diskBound: WorkerDiskBound;
  /** Machine figures and the worker's own health verdict for every heartbeat (SPEC §13). */
  readonly #health: WorkerHealth;
  #logRotation: LogRotation | null = null;
  /**
   * Atoms, setups and teardowns fork from this small process, not from ours (issue 18: a fork of this
   * process costs its page tables and copy-on-write faults, paid on its one thread); null without perl.
   */
  readonly #spawner: Spawner | null;
  /** The environment atoms inherit, read once: copying process.env cost a third of a ms per atom (issue 18). */
  readonly #commandEnv = commandEnvironment();
  #workerId: number | null = null;
  #isDraining = false;
  #resolveExit: (code: number) => void = () => undefined;
  readonly exited: Promise<number>;
  #stopping: Promise<void> | null = null;

  constructor(options: DaemonOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#spawner = spawnerAvailable() ? new Spawner(undefined, { nice: options.commandNice ?? 0 }) : null;
    this.#workDir = join(options.baseDirectory, 'worker', `${process.pid}-${this.#sessionId.slice(0, 8)}`);
    // The repository cache outlives this process: the next build of a repository fetches only what changed.
    this.#git = new GitCache({ root: join(options.baseDirectory, 'git-cache'), timeoutMs: options.gitTimeoutMs, allowLocalRepositories: options.allowLocalRepositories });
    this.#diskBound = new WorkerDiskBound({
      workDir: this.#workDir, gitCacheRoot: join(options.baseDirectory, 'git-cache'), diskPath: options.baseDirectory,
      maxBytes: options.maxWorkspaceBytes, minFreeBytes: options.minDiskFreeBytes, log: options.log.child({ component: 'disk' }),
      buildsInUse: () => [...this.#builds.values()].map((build) => build.message), mirrorPath: (url) => this.#git.mirrorPath(url),
    });
    this.#health = new WorkerHealth({
      diskPath: this.#workDir, cwd: this.#workDir, minDiskFreeBytes: options.minDiskFreeBytes,
      checkCommand: options.healthCheckCommand ?? null, checkIntervalMs: options.healthCheckIntervalMs ?? 30_000,
      log: options.log.child({ component: 'health' }), onChange: () => this.#connection.heartbeatNow(),
    });
    this.exited = new Promise((resolve) => {
      this.#resolveExit = resolve;
    });
    this.#connection = new MasterConnection({
      masterUrl: options.masterUrl,
      secret: options.secret,
      log: options.log,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      heartbeatFailureThreshold: options.heartbeatFailureThreshold,
      masterUnreachableMs: options.masterUnreachableMs,
      registration: () => this.#registration(),
      heartbeatReport: () => this.#health.report(),
      onMessage: (message) => this.#handle(message),
      onRegistered: (workerId, resumed, receivedOutput) => this.#onRegistered(workerId, resumed, receivedOutput),
      onUnreachable: (reason) => {
        this.#log.error({ reason }, 'giving up on the master');
        void this.#shutdown(1, 'worker_stop', false);
      },
    });
  }

  async start(): Promise<void> {
    this.#runAs = resolveRunAs(this.#options.runAsUser ?? null);
    const killed = await killOrphansOfDeadWorkers(join(this.#options.baseDirectory, 'worker'));
    if (killed > 0) this.#log.warn({ killed }, 'killed processes left running by a worker process that died before this one');
    await this.#protectBaseDirectory();
    await mkdir(this.#workDir, { recursive: true });
    // Build commands of another user must reach their folders below ours: traverse, never list.
    if (this.#runAs !== null) await chmod(this.#workDir, 0o711);
    this.#diskBound.start();
    this.#health.start();
    this.#logRotation = startLogRotation({ maxBytes: this.#options.logMaxBytes, keepFiles: this.#options.logKeepFiles, log: this.#log });
    this.#log.info({ master: this.#options.masterUrl, executors: this.#options.numExecutors, name: this.#options.name }, 'worker starting');
    this.#connection.start();
  }

  /**
   * Workspaces, repository caches, remote files and archives may hold credentials and private sources: what
   * this worker writes under base_directory is for its user only (issue 10 item 9). The umask covers every
   * file made later, by us or a build; the folders made before it are narrowed here.
   */
  async #protectBaseDirectory(): Promise<void> {
    process.umask(0o077);
    // run_as_user: the build user reaches its folders through base_directory (traverse only, no listing); the
    // folders above it are the operator's to open (README "Security").
    if (this.#runAs !== null) await chmod(this.#options.baseDirectory, 0o711);
    for (const dir of [join(this.#options.baseDirectory, 'worker'), join(this.#options.baseDirectory, 'git-cache')]) {
      const mode = this.#runAs !== null && dir.endsWith('worker') ? 0o711 : 0o700;
      await mkdir(dir, { recursive: true, mode });
      await chmod(dir, mode);
    }
  }

  /** Finish what runs, take nothing new, tear down, disconnect, exit 0. */
  drain(): void {
    if (this.#isDraining) return;
    this.#isDraining = true;
    this.#log.info({ running: this.#running.size }, 'draining: finishing running subjobs, taking no new ones');
    this.#connection.send({ type: 'draining' });
    void this.#finishDrain();
  }

  /**
   * Stop running atoms now (the master gives them to others), tear down the builds set up here, and exit.
   * Asked again while that runs: the teardowns are stopped too (their setups' work is left as it is).
   */
  stopNow(): void {
    if (this.#isStoppingNow) {
      this.#skipTeardowns = true;
      for (const child of this.#teardownProcesses) void child.stop('worker_stop');
      return;
    }
    this.#isStoppingNow = true;
    void this.#shutdown(0, 'worker_stop', true);
  }

  #registration(): Omit<RegisterMessage, 'proof'> {
    return {
      type: 'register',
      protocol_version: PROTOCOL_VERSION,
      name: this.#options.name,
      ...(this.#options.pool ? { pool: this.#options.pool } : {}),
      num_executors: this.#options.numExecutors,
      session_id: this.#sessionId,
      heartbeat_interval_ms: this.#options.heartbeatIntervalMs,
      heartbeat_failure_threshold: this.#options.heartbeatFailureThreshold,
      accepts_queued_subjobs: true,
      disk: { state: this.#diskBound.state, free_bytes: this.#diskBound.freeBytes },
      ...(this.#options.labels === undefined || this.#options.labels.length === 0 ? {} : { labels: [...this.#options.labels] }),
      builds: this.#buildsSetUp(),
      // A subjob that ended while the master was away still has its results queued: it is resumed too.
      resume: this.#workerId === null ? null : {
        worker_id: this.#workerId,
        // A subjob still waiting for its executor is not claimed: the master gives it to whoever is free.
        leases: [...new Set([...this.#startedLeaseIds(), ...this.#connection.queuedLeaseIds()])].slice(0, 1024),
      },
    };
  }

  #onRegistered(workerId: number, resumed: readonly string[], receivedOutput: readonly ReceivedOutput[]): void {
    const previousId = this.#workerId;
    this.#workerId = workerId;
    const isReconnect = previousId !== null;
    this.#log.info({ workerId, previousId: previousId ?? undefined, resumed: resumed.length }, isReconnect ? 'reconnected to the master' : 'registered with the master');
    if (!isReconnect) return;
    // Work the master gave to others meanwhile must stop here, and its queued results are worthless.
    const keep = new Set(resumed);
    for (const [leaseId, running] of this.#running) {
      if (!keep.has(leaseId)) running.abort.abort('lease_lost');
    }
    this.#connection.dropQueued((message) => 'lease_id' in message && !keep.has(message.lease_id));
    this.#resendOutput(keep, receivedOutput);
    // Nothing is torn down for a lost connection: the registration told the master which builds are set up
    // here, and it answers with teardown_build for those it has finished with (issue 15: tearing down here
    // while the master still counted on the setup made it hand out subjobs this worker then refused).
    if (this.#isDraining) this.#connection.send({ type: 'draining' });
  }

  /**
   * Output the master lacks (sent into a connection that died, or to a master that died before storing it)
   * goes again, from where the master's copy ends, and in place of what was queued for it meanwhile.
   */
  #resendOutput(resumed: ReadonlySet<string>, receivedOutput: readonly ReceivedOutput[]): void {
    const held = new Map(receivedOutput.map((entry) => [outputKey(entry.lease_id, entry.atom_id), entry.bytes]));
    for (const [key, record] of this.#outputs) {
      if (resumed.has(record.ids.lease_id)) {
        const atom = record.ids.atom_id;
        const bytes = held.get(key);
        this.#connection.dropQueued((message) => (message.type === 'atom_output' || (bytes === undefined && message.type === 'atom_started')) &&
          message.lease_id === record.ids.lease_id && message.atom_id === atom);
        // An atom the master does not list holds nothing there: the master died before it stored the start, or
        // the start never left here. It starts now, before its output, or the master has nowhere to put it.
        if (bytes === undefined) this.#connection.send({ type: 'atom_started', ...record.ids });
        for (const data of record.since(bytes ?? 0)) this.#connection.send({ type: 'atom_output', ...record.ids, data });
      }
      if (record.isDone || !resumed.has(record.ids.lease_id)) this.#outputs.delete(key);
    }
  }

  #handle(message: MasterMessage): void {
    switch (message.type) {
      case 'setup_build':
        void this.#setup(message);
        return;
      case 'run_subjob':
        this.#run(message);
        return;
      case 'abort_lease':
        this.#running.get(message.lease_id)?.abort.abort(message.reason);
        return;
      case 'cancel_build':
        void this.#cancelBuild(message.build_id);
        return;
      case 'teardown_build': {
        const build = this.#builds.get(message.build_id);
        if (!build) {
          this.#connection.send({ type: 'teardown_finished', build_id: message.build_id, ok: true, exit_code: null, output_tail: '' });
          return;
        }
        build.wantsTeardown = true;
        void this.#maybeTeardown(message.build_id);
        return;
      }
      case 'shutdown':
        this.drain();
        return;
      case 'error':
        this.#log.warn({ code: message.code, message: message.message }, 'the master reported an error');
        return;
      case 'registered':
      case 'heartbeat_ack':
        return;
      default: {
        const unexpected: never = message;
        this.#log.warn({ message: unexpected }, 'unexpected message from the master');
      }
    }
  }

  async #setup(message: SetupBuildMessage): Promise<void> {
    const existing = this.#builds.get(message.build_id);
    if (existing && existing.setup !== 'failed' && !existing.isTearingDown) {
      // Asked again (a restarted master, or one that had declared us dead): a finished setup answers at once, a
      // running one when it ends, and a teardown planned for it is off, since the master wants it after all.
      existing.wantsTeardown = false;
      if (existing.setup === 'ok') {
        this.#connection.send({ type: 'setup_finished', build_id: message.build_id, ok: true, exit_code: 0, output_tail: '' });
      }
      return;
    }
    if (this.#isDraining || this.#stopping !== null) {
      // The master sent it before it heard of the drain (one sent on a reconnect while it was away): no new
      // build here, whose setup might start after this worker's teardowns and never be torn down. The master
      // forgets this worker's setups once it has left.
      this.#log.info({ buildId: message.build_id }, 'not setting up a build while draining');
      return;
    }
    const build: WorkerBuild = {
      message, marker: `cr-build-${message.build_id}-${this.#sessionId}`, mask: this.#maskFor(message), abort: new AbortController(), context: null, ownedDir: null,
      setup: 'running', setupProcess: null, setupDone: Promise.resolve(), isTearingDown: false, wantsTeardown: false,
    };
    this.#builds.set(message.build_id, build);
    build.setupDone = this.#runSetup(build, message);
    await build.setupDone;
  }

  async #runSetup(build: WorkerBuild, message: SetupBuildMessage): Promise<void> {
    const log = this.#log.child({ buildId: message.build_id });
    const report = (ok: boolean, exitCode: number | null, tail: string) => {
      build.setup = ok ? 'ok' : 'failed';
      this.#connection.send({ type: 'setup_finished', build_id: message.build_id, ok, exit_code: exitCode, output_tail: build.mask(tail).slice(-60_000) });
      // A failed setup leaves nothing to tear down, unless it was stopped (a cancel, the worker stopping): its
      // commands may have half-done their work.
      if (!ok && !build.wantsTeardown && !build.abort.signal.aborted && this.#builds.get(message.build_id) === build) this.#builds.delete(message.build_id);
      void this.#maybeTeardown(message.build_id);
    };
    let projectDir: string;
    try {
      const workspace = await prepareWorkspace(message.build_id, message.project, this.#workspaceDeps(message, log), build.abort.signal);
      build.ownedDir = workspace.ownedDir;
      projectDir = workspace.projectDir;
      if (this.#runAs !== null && workspace.ownedDir !== null) await handOver(workspace.ownedDir, this.#runAs);
      if (Object.keys(message.remote_files).length > 0) {
        await downloadRemoteFiles(message.remote_files, projectDir, {
          maxBytes: this.#options.maxRemoteFileBytes,
          timeoutMs: this.#options.remoteFileTimeoutMs,
          maxFiles: 1000,
        }, build.abort.signal);
      }
    } catch (error) {
      log.warn({ err: build.mask(errorMessage(error)) }, 'setup failed: could not get the project');
      report(false, null, `Could not get the project on worker ${this.#options.name}: ${errorMessage(error)}`);
      return;
    }
    if (build.abort.signal.aborted) {
      // Stopped before its command could start: no teardown command is owed (no context), its folder still goes.
      report(false, null, `The setup was stopped before it started on worker ${this.#options.name}`);
      return;
    }
    build.context = {
      buildId: message.build_id,
      projectDir,
      command: message.command,
      junitGlobs: message.junit ?? [],
      atomTimeoutMs: message.atom_timeout_ms,
      killGraceMs: message.kill_grace_ms,
      maxConsoleBytes: message.max_console_bytes,
      mask: build.mask,
      runAs: this.#runAs,
    };
    if (message.setup_command === null) {
      report(true, 0, '');
      return;
    }
    log.info('running setup_build');
    const result = await this.#runBuildCommand(build, message.setup_command, (child) => {
      build.setupProcess = child;
    });
    build.setupProcess = null;
    log.info({ exitCode: result.exitCode }, 'setup finished');
    report(result.exitCode === 0, result.exitCode, result.tail);
  }

  #startedLeaseIds(): string[] {
    return [...this.#running].filter(([, running]) => running.progress.hasStarted).map(([leaseId]) => leaseId);
  }

  /** For the registration: the builds set up here or being set up, not those being torn down. */
  #buildsSetUp(): { build_id: number; setup: 'running' | 'ok' }[] {
    const listed: { build_id: number; setup: 'running' | 'ok' }[] = [];
    for (const [buildId, build] of this.#builds) {
      if (build.isTearingDown || build.setup === 'failed') continue;
      listed.push({ build_id: buildId, setup: build.setup });
    }
    return listed.slice(0, 1024);
  }

  #workspaceDeps(message: SetupBuildMessage, log: Logger): WorkspaceDeps {
    return {
      git: this.#git,
      projectsRoot: join(this.#workDir, 'projects'),
      allowLocalRepositories: this.#options.allowLocalRepositories,
      log,
      downloadSnapshot: (dir, signal) => downloadSnapshot({
        masterUrl: this.#options.masterUrl,
        secret: this.#options.secret,
        path: message.snapshot_path,
        dir,
        maxBytes: this.#options.maxSnapshotBytes,
        signal,
      }),
    };
  }

  async #runBuildCommand(build: WorkerBuild, command: string, started: (child: GroupProcess) => void): Promise<{ exitCode: number; tail: string }> {
    const tail = new OutputTail(TAIL_BYTES);
    const child = spawnShell(command, {
      cwd: build.context!.projectDir,
      env: commandEnvironment({ PROJECT_DIR: build.context!.projectDir, ...userEnvironment(this.#runAs) }),
      graceMs: build.message.kill_grace_ms,
      marker: build.marker,
      runAs: this.#runAs,
      spawner: this.#spawner,
      nice: this.#options.commandNice ?? 0,
      onOutput: (chunk) => tail.push(chunk),
    });
    started(child);
    const result = await child.result;
    if (result.stopReason !== null) await killMarkedProcessesUntilGone(build.marker);
    return { exitCode: result.exitCode, tail: tail.text(100) };
  }

  #run(message: RunSubjobMessage): void {
    const build = this.#builds.get(message.build_id);
    const ids = { lease_id: message.lease_id, build_id: message.build_id, subjob_id: message.subjob_id };
    if (this.#running.has(message.lease_id)) {
      this.#log.warn({ ...ids }, 'ignoring a second run_subjob for a lease already running here');
      return;
    }
    if (!build || build.setup !== 'ok' || build.isTearingDown || !build.context) {
      // The master decides what comes next (set the build up again, with a back-off): no resend loop from here.
      this.#log.warn({ ...ids }, 'refusing a subjob of a build that is not set up here');
      this.#connection.send({ type: 'subjob_refused', ...ids, reason: 'not_set_up' });
      return;
    }
    // The master's newest word wins: it gave work of the build, so a teardown it asked for before is off.
    build.wantsTeardown = false;
    const abort = new AbortController();
    const context = build.context;
    const index = message.executor_index;
    // A subjob sent ahead for a busy executor starts the moment that executor's work ends, with no round
    // trip to the master in between (issue 18); aborted while it waits, it ends at once.
    const ahead = this.#executorTails.get(index);
    const progress = { hasStarted: ahead === undefined };
    const turn = ahead === undefined ? Promise.resolve() : untilSettledOrAborted(ahead, abort.signal);
    const done = turn.then(() => {
      progress.hasStarted = true;
      return runSubjob({
        message,
        build: context,
        connection: this.#connection,
        workDir: this.#workDir,
        log: this.#log.child({ buildId: message.build_id, subjobId: message.subjob_id }),
        signal: abort.signal,
        outputs: this.#outputs,
        spawner: this.#spawner,
        commandNice: this.#options.commandNice ?? 0,
        baseEnv: this.#commandEnv,
      });
    }).catch((error: unknown) => {
      this.#log.error({ ...ids, err: error }, 'running the subjob failed');
      this.#connection.send({ type: 'subjob_finished', ...ids });
    }).finally(() => {
      this.#running.delete(message.lease_id);
      void this.#maybeTeardown(message.build_id);
      if (this.#isDraining) void this.#finishDrain();
    });
    this.#running.set(message.lease_id, { buildId: message.build_id, subjobId: message.subjob_id, abort, done, progress });
    // The executor is free once every subjob given to it has ended (one sent ahead may end first, aborted).
    const tail = ahead === undefined ? done : Promise.allSettled([ahead, done]).then(() => undefined);
    this.#executorTails.set(index, tail);
    void tail.then(() => {
      if (this.#executorTails.get(index) === tail) this.#executorTails.delete(index);
    });
  }

  async #cancelBuild(buildId: number): Promise<void> {
    const build = this.#builds.get(buildId);
    const stopping = [...this.#running.values()].filter((running) => running.buildId === buildId);
    for (const running of stopping) running.abort.abort('cancel');
    if (!build) {
      this.#connection.send({ type: 'teardown_finished', build_id: buildId, ok: true, exit_code: null, output_tail: '' });
      return;
    }
    build.wantsTeardown = true;
    build.abort.abort('cancel');
    if (build.setupProcess) await build.setupProcess.stop('cancel');
    await Promise.allSettled(stopping.map((running) => running.done));
    await this.#maybeTeardown(buildId);
  }

  /** Teardown runs once the master asked for it and nothing of the build runs here any more. */
  async #maybeTeardown(buildId: number): Promise<void> {
    const build = this.#builds.get(buildId);
    if (!build || !build.wantsTeardown || build.isTearingDown || build.setup === 'running') return;
    for (const running of this.#running.values()) if (running.buildId === buildId) return;
    build.isTearingDown = true;
    await this.#teardown(buildId, build);
  }

  async #teardown(buildId: number, build: WorkerBuild): Promise<void> {
    const log = this.#log.child({ buildId });
    let exitCode: number | null = null;
    let tail = '';
    // Teardown runs whenever setup ran, even if it failed or was stopped by a cancel: it may have half-done its work.
    if (build.message.teardown_command !== null && build.context !== null) {
      log.info('running teardown_build');
      let child: GroupProcess | null = null;
      const result = await this.#runBuildCommand(build, build.message.teardown_command, (started) => {
        child = started;
        this.#teardownProcesses.add(started);
      });
      if (child !== null) this.#teardownProcesses.delete(child);
      exitCode = result.exitCode;
      tail = result.tail;
      if (exitCode === 0) log.info('teardown finished');
      else log.warn({ exitCode, output: build.mask(tail) }, 'teardown failed');
    }
    // A new setup of the same build may have started meanwhile: its entry and its folder are not ours.
    const isCurrent = this.#builds.get(buildId) === build;
    if (isCurrent) this.#builds.delete(buildId);
    if (isCurrent && build.ownedDir !== null) await rm(build.ownedDir, { recursive: true, force: true }).catch(() => undefined);
    this.#connection.send({ type: 'teardown_finished', build_id: buildId, ok: exitCode === null || exitCode === 0, exit_code: exitCode, output_tail: build.mask(tail).slice(-60_000) });
  }

  /** The secret, a git URL's credentials and remote_files URLs' query values and passwords. */
  #maskFor(message: SetupBuildMessage): Mask {
    const values = [this.#options.secret, ...Object.values(message.remote_files).flatMap(credentialValuesOf)];
    if (message.project.type === 'git') values.push(...credentialValuesOf(message.project.url));
    return createMask(values);
  }

  async #finishDrain(): Promise<void> {
    if (this.#running.size > 0) return;
    await this.#shutdown(0, null, true);
  }

  /** The one way out: stop (or let finish) what runs, tear down when asked, close, exit. */
  #shutdown(code: number, stopReason: StopReason | null, withTeardown: boolean): Promise<void> {
    this.#stopping ??= (async () => {
      for (const running of this.#running.values()) running.abort.abort(stopReason ?? 'worker_stop');
      await Promise.allSettled([...this.#running.values()].map((running) => running.done));
      for (const build of this.#builds.values()) {
        build.abort.abort('worker_stop');
        if (build.setupProcess) await build.setupProcess.stop('worker_stop');
        // Its sweep of the setup's stray processes would take the teardown's too (they share the marker).
        await build.setupDone.catch(() => undefined);
      }
      if (withTeardown) {
        for (const [buildId, build] of [...this.#builds]) {
          if (build.isTearingDown || this.#skipTeardowns) continue;
          build.isTearingDown = true;
          await this.#teardown(buildId, build).catch((error: unknown) => this.#log.warn({ buildId, err: error }, 'teardown failed'));
        }
      }
      await this.#connection.close();
      await this.#diskBound.close();
      await this.#health.close();
      this.#logRotation?.close();
      this.#spawner?.close();
      await rm(this.#workDir, { recursive: true, force: true }).catch(() => undefined);
      this.#log.info({ code }, 'worker stopped');
      this.#resolveExit(code);
    })();
    return this.#stopping;
  }
}

/** Resolves when `ahead` settles, or at once when the signal aborts. */
function untilSettledOrAborted(ahead: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const onAbort = () => resolve();
    signal.addEventListener('abort', onAbort, { once: true });
    void ahead.finally(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}
