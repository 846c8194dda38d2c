/**
 * Runs a shell command in a process group of its own and stops it for real: SIGTERM to the whole group, a
 * grace period, then SIGKILL to whatever of the group is still alive. Processes that leave the group
 * (`setsid`, a double fork into a new session) are found afterwards by a marker in their environment.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { getPriority, constants as osConstants, setPriority } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from './errors.ts';
import type { Spawner } from './spawner.ts';

export const STOP_REASONS = ['cancel', 'timeout', 'worker_stop', 'lease_lost'] as const;
export type StopReason = (typeof STOP_REASONS)[number];

export function isStopReason(value: unknown): value is StopReason {
  return typeof value === 'string' && (STOP_REASONS as readonly string[]).includes(value);
}

/** The environment variable that tags every process started for a command, escaped or not. */
export const MARKER_VARIABLE = 'CLUSTERRUNNER_MARKER';

/** The exit code reported when the shell could not be started at all (as a shell reports a missing command). */
export const SPAWN_FAILURE_EXIT_CODE = 127;

export interface ProcessResult {
  /** The exit code; when killed by a signal, minus the signal number (SIGTERM -15, SIGKILL -9). */
  readonly exitCode: number;
  readonly signal: NodeJS.Signals | null;
  /** Why we stopped it, or null when it ended by itself. */
  readonly stopReason: StopReason | null;
  /** From the spawn to the shell's exit, in milliseconds. */
  readonly durationMs: number;
  /**
   * False when it is known that no process the command started outlived it outside its group (the spawner,
   * a subreaper, saw none as the shell exited); absent when unknown. The marker scan can be skipped then.
   */
  readonly mayHaveEscaped?: boolean;
}

export interface RunAsUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
}

/** Looks a user up in /etc/passwd by name or uid; null when there is no such user. */
export function findUser(nameOrUid: string, passwd = '/etc/passwd'): RunAsUser | null {
  for (const line of readFileSync(passwd, 'utf8').split('\n')) {
    const [name, , uid, gid, , home] = line.split(':');
    if (name === undefined || uid === undefined || gid === undefined) continue;
    if (name === nameOrUid || uid === nameOrUid) return { name, uid: Number(uid), gid: Number(gid), home: home ?? '/' };
  }
  return null;
}

export interface ShellOptions {
  /** The working directory; when it is missing the result is a failure with exit code 127. */
  readonly cwd: string;
  /** The full environment of the command (the caller merges `process.env` when it wants it). */
  readonly env: NodeJS.ProcessEnv;
  /** Runs the command as this user and group (the worker's run_as_user; needs root); default: ours. */
  readonly runAs?: RunAsUser | null;
  /** Milliseconds between SIGTERM and SIGKILL when the command is stopped. */
  readonly graceMs: number;
  /** Stop the command with reason `'timeout'` after this many milliseconds; none when null or absent. */
  readonly timeoutMs?: number | null;
  /** stdout (and stderr too when mergeStderr) chunks as they arrive. */
  readonly onOutput?: (chunk: Buffer) => void;
  /** stderr chunks as they arrive; used only when mergeStderr is false. */
  readonly onStderr?: (chunk: Buffer) => void;
  /** Default true: stderr goes into the stdout stream, in the exact order it was written. */
  readonly mergeStderr?: boolean;
  /** Abort stops the command with `signal.reason` when it is a StopReason, else with `'cancel'`. */
  readonly signal?: AbortSignal;
  /** Put into the child's environment as CLUSTERRUNNER_MARKER so escaped processes can be found later. */
  readonly marker?: string;
  /** Fork through this small long-lived process (shared/spawner.ts) instead of from this one. */
  readonly spawner?: Spawner | null;
  /** Without a spawner: run the command this far below our CPU priority (command_nice; a spawner has its own). */
  readonly nice?: number;
}

export interface GroupProcess {
  /** The shell's pid, which is also its process group id; 0 when the shell could not be started. */
  readonly pid: number;
  /**
   * Stops reading the command's output until resumeOutput(): once the pipe fills, the command blocks on its
   * next write, so a reader that cannot keep up slows the command down instead of losing output.
   */
  pauseOutput(): void;
  resumeOutput(): void;
  /**
   * Resolves when the shell exits (never rejects). Members of the group it leaves behind in the background
   * do not hold it, and are not killed by it: stop() or killMarkedProcessesUntilGone() do that.
   */
  readonly result: Promise<ProcessResult>;
  /**
   * SIGTERM to the whole group, SIGKILL to the group after graceMs if anything of it is still alive; resolves
   * with the result once nothing of the group is left alive. Idempotent: a second call returns the same
   * promise. After a natural exit it still clears the group but reports the natural result.
   */
  stop(reason: StopReason): Promise<ProcessResult>;
}

/*
 * After the shell exits, its pipes may still hold output it wrote; a grandchild that inherited them can
 * also keep them open for ever, so this is how long we wait for them to close before cutting them off.
 */
const PIPE_DRAIN_MS = 200;

/* A process in uninterruptible sleep dies only when the kernel lets it; stop() must end all the same. */
const KILL_SETTLE_MS = 5_000;

const POLL_FIRST_MS = 5;
const POLL_MAX_MS = 50;

/** Runs `/bin/bash -c 'set -o pipefail; <command>'` detached (own process group), stdin ignored. */
export function spawnShell(command: string, options: ShellOptions): GroupProcess {
  const mergeStderr = options.mergeStderr ?? true;
  // The redirection happens inside bash so both streams share one pipe and keep their relative order;
  // merging two pipes in Node could only interleave them by arrival.
  const script = mergeStderr ? `set -o pipefail; exec 2>&1; ${command}` : `set -o pipefail; ${command}`;
  const env: NodeJS.ProcessEnv =
    options.marker === undefined ? { ...options.env } : { ...options.env, [MARKER_VARIABLE]: options.marker };
  const startedAt = performance.now();
  const onStdout = options.onOutput;
  const onStderr = mergeStderr ? options.onOutput : options.onStderr;

  let stopReason: StopReason | null = null;
  let hasExited = false;
  let isSettled = false;
  let stopping: Promise<ProcessResult> | undefined;
  let timeoutTimer: NodeJS.Timeout | undefined;
  let drainTimer: NodeJS.Timeout | undefined;
  let exitResult: ProcessResult | undefined;
  let resolveResult!: (result: ProcessResult) => void;
  const result = new Promise<ProcessResult>((resolve) => {
    resolveResult = resolve;
  });
  // stdout and stderr are both piped (in merged mode too: bash parses the whole first line before it runs
  // `exec 2>&1`, so a syntax error in the command is written to the original stderr).
  let openStreams = 2;
  let pgid = 0;
  let resolvePid!: (pid: number) => void;
  const pidKnown = new Promise<number>((resolve) => {
    resolvePid = resolve;
  });

  function settle(): void {
    if (isSettled || exitResult === undefined) return;
    isSettled = true;
    clearTimeout(drainTimer);
    // Output arriving after this would belong to nobody; closing our end also frees the event loop.
    launched.close();
    resolveResult(exitResult);
  }

  function streamClosed(): void {
    openStreams -= 1;
    if (openStreams === 0) settle();
  }

  function finish(exitCode: number, signal: NodeJS.Signals | null, mayHaveEscaped?: boolean): void {
    if (hasExited) return;
    hasExited = true;
    detachTriggers();
    exitResult = {
      exitCode, signal, stopReason, durationMs: Math.round(performance.now() - startedAt),
      ...(mayHaveEscaped === undefined ? {} : { mayHaveEscaped }),
    };
    if (openStreams === 0) settle();
    else drainTimer = setTimeout(settle, PIPE_DRAIN_MS);
  }

  function failStart(message: string): void {
    if (hasExited) return;
    onStdout?.(Buffer.from(`clusterrunner: could not start the command: ${message}\n`));
    openStreams = 0;
    resolvePid(0);
    finish(SPAWN_FAILURE_EXIT_CODE, null);
  }

  const sink: LaunchSink = {
    // Always read both pipes, even with nobody listening, so a chatty command never blocks on a full pipe.
    data: (stream, chunk) => (stream === 1 ? onStdout : onStderr)?.(chunk),
    closed: streamClosed,
    pid: (pid) => {
      pgid = pid;
      resolvePid(pid);
    },
    exit: finish,
    failed: failStart,
  };
  let launched: Launched;
  if (options.spawner) {
    launched = launchWithSpawner(options.spawner, script, env, options, sink);
  } else {
    const direct = launchWithNode(script, env, options, sink);
    if (typeof direct === 'string') return failedProcess(direct, options.onOutput, startedAt);
    launched = direct;
  }

  const onAbort = (): void => {
    const reason: unknown = options.signal?.reason;
    void stop(isStopReason(reason) ? reason : 'cancel');
  };

  function detachTriggers(): void {
    clearTimeout(timeoutTimer);
    options.signal?.removeEventListener('abort', onAbort);
  }

  function stop(reason: StopReason): Promise<ProcessResult> {
    if (stopping !== undefined) return stopping;
    if (!hasExited) stopReason = reason;
    detachTriggers();
    stopping = (async () => {
      // Through the spawner the pid arrives a moment after the start; it cannot be signalled before.
      const pid = await pidKnown;
      if (pid > 0) await killGroup(pid, options.graceMs);
      return result;
    })();
    return stopping;
  }

  if (options.timeoutMs !== undefined && options.timeoutMs !== null) {
    // stop() never rejects: killGroup swallows every signalling error.
    timeoutTimer = setTimeout(() => void stop('timeout'), options.timeoutMs);
  }
  if (options.signal !== undefined) {
    if (options.signal.aborted) onAbort();
    else options.signal.addEventListener('abort', onAbort, { once: true });
  }

  return {
    get pid() {
      return pgid;
    },
    result,
    stop,
    pauseOutput: () => launched.pause(),
    resumeOutput: () => launched.resume(),
  };
}

/** What a launcher reports to spawnShell. */
interface LaunchSink {
  data(stream: 1 | 2, chunk: Buffer): void;
  /** One of the two pipes reached its end (or failed). */
  closed(): void;
  pid(pid: number): void;
  exit(exitCode: number, signal: NodeJS.Signals | null, mayHaveEscaped?: boolean): void;
  /** The command never started; the message says why. */
  failed(message: string): void;
}

interface Launched {
  pause(): void;
  resume(): void;
  /** Stops reading the pipes for good. */
  close(): void;
}

/** Node's own spawn; a string when it threw (the reason). */
/** The shell's first instants run at our priority: Node's spawn has no such option. */
function lowerPriority(pid: number, by: number): void {
  try {
    setPriority(pid, Math.min(19, getPriority() + by));
  } catch {
    // Gone already, or not ours to change (run_as_user): it runs at our priority.
  }
}

function launchWithNode(script: string, env: NodeJS.ProcessEnv, options: ShellOptions, sink: LaunchSink): Launched | string {
  let child: ChildProcess;
  try {
    child = spawn('/bin/bash', ['-c', script], {
      cwd: options.cwd,
      env,
      detached: true,
      ...(options.runAs ? { uid: options.runAs.uid, gid: options.runAs.gid } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (error) {
    // Some spawn errors (bad arguments, resource limits) are thrown instead of emitted.
    return describeSpawnFailure(error, options.cwd);
  }
  const streams = [child.stdout, child.stderr].filter((stream) => stream !== null);
  child.stdout?.on('data', (chunk: Buffer) => sink.data(1, chunk));
  child.stderr?.on('data', (chunk: Buffer) => sink.data(2, chunk));
  for (const stream of streams) {
    // Reading a pipe can fail (EIO and the like); the exit status still tells the outcome.
    stream.on('error', () => undefined);
    stream.on('close', () => sink.closed());
  }
  if (child.pid !== undefined) {
    if (options.nice) lowerPriority(child.pid, options.nice);
    sink.pid(child.pid);
  }
  child.on('exit', (code, signal) => sink.exit(code ?? -signalNumber(signal), signal));
  child.on('error', (error) => {
    // With a pid the process exists and 'exit' will come; without one it never started.
    if (child.pid !== undefined) return;
    sink.failed(describeSpawnFailure(error, options.cwd).replace(/^clusterrunner: could not start the command: /, '').trimEnd());
  });
  return {
    pause: () => {
      for (const stream of streams) stream.pause();
    },
    resume: () => {
      for (const stream of streams) stream.resume();
    },
    close: () => {
      for (const stream of streams) stream.destroy();
    },
  };
}

function launchWithSpawner(spawner: Spawner, script: string, env: NodeJS.ProcessEnv, options: ShellOptions, sink: LaunchSink): Launched {
  let isClosed = false;
  let openStreams = 2;
  const id = spawner.spawn(
    { cwd: options.cwd, env, script, ...(options.runAs ? { uid: options.runAs.uid, gid: options.runAs.gid } : {}) },
    {
      onPid: (pid) => sink.pid(pid),
      onData: (stream, chunk) => sink.data(stream, chunk),
      onClose: () => {
        openStreams -= 1;
        sink.closed();
      },
      onExit: (code, signal, mayHaveEscaped) => {
        const name = signal === 0 ? null : signalName(signal);
        sink.exit(signal === 0 ? code : -signal, name, mayHaveEscaped);
      },
      onFail: (message) => {
        if (isClosed) return;
        // The spawner went away under a running command: its end is unknown, its pipes are gone.
        for (; openStreams > 0; openStreams--) sink.closed();
        sink.failed(message);
      },
    },
  );
  return {
    pause: () => spawner.pause(id),
    resume: () => spawner.resume(id),
    close: () => {
      isClosed = true;
      spawner.drop(id);
    },
  };
}

function signalName(signal: number): NodeJS.Signals | null {
  for (const [name, number] of Object.entries(osConstants.signals)) if (number === signal) return name as NodeJS.Signals;
  return null;
}

function failedProcess(
  message: string,
  onOutput: ((chunk: Buffer) => void) | undefined,
  startedAt: number,
): GroupProcess {
  onOutput?.(Buffer.from(message));
  const result = Promise.resolve<ProcessResult>({
    exitCode: SPAWN_FAILURE_EXIT_CODE,
    signal: null,
    stopReason: null,
    durationMs: Math.round(performance.now() - startedAt),
  });
  return { pid: 0, result, stop: () => result, pauseOutput: () => undefined, resumeOutput: () => undefined };
}

function describeSpawnFailure(error: unknown, cwd: string): string {
  // Node reports a missing cwd as `spawn /bin/bash ENOENT`, which points at the wrong culprit.
  const detail = existsSync(cwd) ? errorMessage(error) : `the working directory ${cwd} does not exist`;
  return `clusterrunner: could not start the command: ${detail}\n`;
}

function signalNumber(signal: NodeJS.Signals | null): number {
  if (signal === null) return 0;
  return osConstants.signals[signal] ?? 0;
}

/** SIGTERM, up to graceMs for the group to go, then SIGKILL and a bounded wait for it to be gone. */
async function killGroup(pgid: number, graceMs: number): Promise<void> {
  if (!signalGroup(pgid, 'SIGTERM')) return;
  if (await waitForGroupGone(pgid, graceMs)) return;
  if (!signalGroup(pgid, 'SIGKILL')) return;
  await waitForGroupGone(pgid, KILL_SETTLE_MS);
}

/** False when the group no longer exists. */
function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (error) {
    // EPERM: some member (a setuid program) refuses our signals; the wait decides whether it matters.
    return errorCode(error) !== 'ESRCH';
  }
}

async function waitForGroupGone(pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  let intervalMs = POLL_FIRST_MS;
  for (;;) {
    if (!isGroupAlive(pgid)) return true;
    const remainingMs = deadline - performance.now();
    if (remainingMs <= 0) return false;
    await sleep(Math.min(intervalMs, remainingMs));
    intervalMs = Math.min(intervalMs * 2, POLL_MAX_MS);
  }
}

/** Whether any live process is left in the group (a command's background processes after it exited). */
export function isGroupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (error) {
    return errorCode(error) !== 'ESRCH';
  }
  // kill(2) also succeeds on zombies, and orphaned zombies stay for ever under a PID 1 that does not reap
  // (common in containers), so look at what the members actually are.
  return hasLiveGroupMember(pgid);
}

function hasLiveGroupMember(pgid: number): boolean {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return true; // no /proc: trust kill(2)
  }
  for (const entry of entries) {
    if (!isPidName(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat !== undefined && stat.pgrp === pgid && !isDead(stat.state)) return true;
  }
  return false;
}

interface ProcStat {
  readonly state: string;
  readonly pgrp: number;
}

function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined; // gone meanwhile
  }
  // The command name in parentheses may itself hold spaces and parentheses; the last ')' ends it.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const pgrp = Number(fields[2]);
  if (state === undefined || !Number.isInteger(pgrp)) return undefined;
  return { state, pgrp };
}

function isDead(state: string): boolean {
  return state === 'Z' || state === 'X' || state === 'x';
}

function isPidName(name: string): boolean {
  return /^\d+$/.test(name);
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
    ? error.code
    : undefined;
}

/**
 * Pids of live (non-zombie) processes whose environment holds CLUSTERRUNNER_MARKER=<marker> or any of
 * `fingerprints` (whole `NAME=value` entries; reads /proc/<pid>/environ, the environment each process started
 * with). A fingerprint catches a process that shed the marker (`env -u`) but kept another value only its atom
 * knew, such as that atom's fresh ARTIFACT_DIR. Empty where there is no /proc, and blind to processes of
 * other users and to those that exec'd with a cleared environment.
 */
export function findMarkedProcesses(marker: string, fingerprints: readonly string[] = []): number[] {
  if (marker === '') return [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const wanted = `${MARKER_VARIABLE}=${marker}`;
  const pids: number[] = [];
  for (const entry of entries) {
    if (!isPidName(entry)) continue;
    const pid = Number(entry);
    // Never ourselves, whatever our own environment says.
    if (pid === process.pid) continue;
    let environ: string;
    try {
      environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
    } catch {
      continue; // gone meanwhile, or not ours to read
    }
    if (!environ.split('\0').some((entry) => entry === wanted || fingerprints.includes(entry))) continue;
    const stat = readProcStat(pid);
    if (stat !== undefined && !isDead(stat.state)) pids.push(pid);
  }
  return pids;
}

/** SIGKILLs every marked process (those that escaped their group with setsid or a double fork); returns how many. */
export function killMarkedProcesses(marker: string, fingerprints: readonly string[] = []): number {
  let killed = 0;
  for (const pid of findMarkedProcesses(marker, fingerprints)) {
    try {
      process.kill(pid, 'SIGKILL');
      killed += 1;
    } catch {
      // ESRCH: it ended between the scan and the kill. EPERM: not ours; nothing more we can do.
    }
  }
  return killed;
}

/*
 * A look at /proc misses what is forked while it reads: an escaped process that keeps starting others (a
 * loop, a double fork under way) leaves a child the look did not see, which then outlives it. Looks repeat
 * until two in a row, the second after a pause, find nothing alive: by then every process killed is dead,
 * so all it started before dying is listed (and one caught mid-exec, its environment unreadable for an
 * instant, is seen by the second look).
 */
const MARKED_QUIET_LOOKS = 2;

/**
 * SIGKILLs every marked process, again and again, until none is left alive (bounded by KILL_SETTLE_MS);
 * returns how many distinct processes it signaled. What the stop paths use: one look (killMarkedProcesses)
 * can leave a survivor behind.
 */
export async function killMarkedProcessesUntilGone(marker: string, fingerprints: readonly string[] = []): Promise<number> {
  const killed = new Set<number>();
  const unkillable = new Set<number>();
  const deadline = performance.now() + KILL_SETTLE_MS;
  let quietLooks = 0;
  let intervalMs = POLL_FIRST_MS;
  for (;;) {
    const alive = findMarkedProcesses(marker, fingerprints).filter((pid) => !unkillable.has(pid));
    quietLooks = alive.length === 0 ? quietLooks + 1 : 0;
    if (quietLooks >= MARKED_QUIET_LOOKS) break;
    for (const pid of alive) {
      try {
        // Again for one still dying: a second SIGKILL is harmless.
        process.kill(pid, 'SIGKILL');
        killed.add(pid);
      } catch (error) {
        // ESRCH: it ended meanwhile. EPERM: not ours; waiting for it would be in vain.
        if (errorCode(error) === 'EPERM') unkillable.add(pid);
      }
    }
    const remainingMs = deadline - performance.now();
    if (remainingMs <= 0) break;
    await sleep(Math.min(intervalMs, remainingMs));
    intervalMs = Math.min(intervalMs * 2, POLL_MAX_MS);
  }
  return killed.size;
}
