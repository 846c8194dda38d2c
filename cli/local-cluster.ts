/**
 * The master and worker that `clusterrunner build` starts on this machine in local mode (SPEC §8), and that
 * `clusterrunner stop` stops. They run as detached background processes (own process group, output in
 * `<base_directory>/logs/`) and are found again through `<base_directory>/master.pid` and `worker.pid`, so
 * that the next build reuses them instead of paying for a start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Conf } from '../shared/conf.ts';
import { ClusterRunnerError, errorMessage } from '../shared/errors.ts';
import { MasterClient, type WorkerView } from './master-client.ts';

export const LOCAL_ROLES = ['master', 'worker'] as const;
export type LocalRole = (typeof LOCAL_ROLES)[number];

const CLI_PATH = fileURLToPath(new URL('../bin/clusterrunner', import.meta.url));
const POLL_MS = 200;
const LOG_TAIL_LINES = 20;
/** How long a draining worker may take before `stop` tells it to stop its atoms (a second SIGTERM). */
const WORKER_DRAIN_MS = 5_000;
/** Beyond kill_grace: a master closing its database, a worker reporting its last results. */
const STOP_SLACK_MS = 10_000;

export function pidFilePath(conf: Pick<Conf, 'baseDirectory'>, role: LocalRole): string {
  return path.join(conf.baseDirectory, `${role}.pid`);
}

export function logFilePath(conf: Pick<Conf, 'baseDirectory'>, role: LocalRole): string {
  return path.join(conf.baseDirectory, 'logs', `${role}.log`);
}

/**
 * The master local mode talks to: the conf's master_url, except that a conf which only moved the master's
 * `port` (and left master_url at its default) means that port on this machine.
 */
export function localMasterUrl(conf: Pick<Conf, 'masterUrl' | 'port'>): string {
  if (conf.masterUrl === 'http://127.0.0.1:43000' && conf.port !== 43000) return `http://127.0.0.1:${conf.port}`;
  return conf.masterUrl;
}

/** Whether url names this machine, so that a master for it can be started here. */
export function isThisMachine(url: string, conf: Pick<Conf, 'hostname'>): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const names = ['localhost', '127.0.0.1', '::1', '0.0.0.0', conf.hostname.toLowerCase(), os.hostname().toLowerCase()];
  return names.includes(host) || host.startsWith('127.');
}

/** What a pid file records: the pid, and the process's start time (clock ticks after boot, /proc/<pid>/stat field 22). */
export interface PidRecord {
  readonly pid: number;
  /** null in a file written by an older version, or where there is no /proc. */
  readonly startTime: string | null;
}

/** The pid in a pid file, or null when there is none (or it holds no pid). */
export function readPidFile(file: string): number | null {
  return readPidRecord(file)?.pid ?? null;
}

export function readPidRecord(file: string): PidRecord | null {
  try {
    const [pidText, startTime] = readFileSync(file, 'utf8').trim().split(/\s+/);
    const pid = Number(pidText);
    if (!Number.isSafeInteger(pid) || pid <= 1) return null;
    return { pid, startTime: startTime !== undefined && /^\d{1,20}$/.test(startTime) ? startTime : null };
  } catch {
    return null;
  }
}

/** `<pid> <start time>`: the pair names one process for ever; a pid alone is reused after the process ends. */
export function writePidFile(file: string, pid: number): void {
  const startTime = processStartTime(pid);
  writeFileSync(file, `${pid}${startTime === null ? '' : ` ${startTime}`}\n`);
}

/** Field 22 of /proc/<pid>/stat, or null without /proc or once the process is gone (or a zombie). */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return null;
    const startTime = fields[19];
    return startTime !== undefined && /^\d+$/.test(startTime) ? startTime : null;
  } catch {
    return null;
  }
}

/**
 * True when the process a pid file recorded is still running: same pid and same start time. A pid file
 * can outlive its process (a reboot, a SIGKILL) and the pid be reused by another program, which we must
 * never signal (issue 10 item 12: a stale pid file killed `vim clusterrunner.yaml`). A record without a start
 * time cannot be verified where /proc exists, so it never counts as ours.
 */
export function isRecordedProcess(record: PidRecord): boolean {
  if (existsSync('/proc/self/stat')) return record.startTime !== null && processStartTime(record.pid) === record.startTime;
  // Without /proc (macOS) we can only ask whether the pid exists.
  try {
    process.kill(record.pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * True when pid is alive and is a ClusterRunner process; for the start lock, whose holder is a short-lived
 * CLI that only makes others wait.
 */
export function isClusterRunnerProcess(pid: number): boolean {
  if (existsSync('/proc/self/cmdline')) {
    if (processStartTime(pid) === null) return false;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('clusterrunner');
    } catch {
      return false;
    }
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface EnsureLocalClusterOptions {
  readonly conf: Conf;
  /** The master to find or start; see localMasterUrl. */
  readonly url: string;
  /** Informational lines for the user. */
  readonly say: (line: string) => void;
  /** Bound on starting each of master and worker; default 30 000 ms. */
  readonly startTimeoutMs?: number;
  /** Stops the waiting (the processes already started keep running, for the next build). */
  readonly signal?: AbortSignal;
}

/**
 * Makes sure a master answers at url and has a live worker: reuses what is running, starts what is missing.
 * Resolves once both are ready; throws a ClusterRunnerError whose message says what went wrong and what to
 * do, with the tail of the failing process's log.
 */
export async function ensureLocalCluster(options: EnsureLocalClusterOptions): Promise<void> {
  const { conf, url, say } = options;
  const client = new MasterClient({ url, secret: conf.secret });
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  const isHere = isThisMachine(url, conf);
  // Nothing is sent to (and no worker started for) a master that has not proven it holds our secret.
  const isUp = await isOurMasterUp(client, conf, url);
  if (isUp && !(isHere && isOurWorkerGone(conf)) && (await hasLiveWorker(client))) return;
  if (!isHere) {
    throw new ClusterRunnerError(
      'MASTER_UNREACHABLE',
      `no master (with a worker) answers at ${url}, and that is not this machine, so none can be started here. ` +
        `Start one there with \`clusterrunner master\`, or point --master-url (or master_url in ${conf.confFile}) at a running master.`,
      { status: 503 },
    );
  }
  mkdirSync(path.join(conf.baseDirectory, 'logs'), { recursive: true });
  // Two builds started at once must not both start a master: the second would fail on the port and its pid
  // file would replace the first one's.
  await withStartLock(conf, Date.now() + timeoutMs, options.signal, async () => {
    await ensureMaster(client, options, timeoutMs);
    await ensureWorker(client, options, timeoutMs);
  });
  say(`local cluster ready at ${url} (stop it with \`clusterrunner stop -c ${conf.confFile}\`)`);
}

async function ensureMaster(client: MasterClient, options: EnsureLocalClusterOptions, timeoutMs: number): Promise<void> {
  const { conf, url, say } = options;
  if (await isOurMasterUp(client, conf, url)) return;
  const pidFile = pidFilePath(conf, 'master');
  const old = readPidRecord(pidFile);
  let started: Started | null = null;
  if (old === null || !isRecordedProcess(old)) {
    const parsed = new URL(url);
    const port = parsed.port || (url.startsWith('https:') ? '443' : '80');
    started = startDaemon(conf, 'master', ['master', '-c', conf.confFile, '-p', port, '--host', listenHost(parsed.hostname)]);
    say(`started a local master (pid ${started.child.pid}, log ${logFilePath(conf, 'master')})`);
  }
  // An old master still starting up (or a just-started one) gets the same time to answer.
  await waitFor(`the local master to answer at ${url}`, timeoutMs, options.signal, started, conf, 'master', () => isOurMasterUp(client, conf, url));
}

/**
 * Where the master local mode starts listens (issue 10 item 6): loopback for the default URL, so that no
 * other machine can reach it; the URL's own host when the conf names this machine another way.
 */
export function listenHost(urlHostname: string): string {
  const host = urlHostname.replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' ? '127.0.0.1' : host;
}

/**
 * False when nothing answers; true when a master answers and proves it holds our secret (GET /v1/identity);
 * a refusal (IDENTITY_NOT_PROVEN) when something answers but cannot prove it: another program, or another
 * user's master that took the port first (issue 10 item 1).
 */
async function isOurMasterUp(client: MasterClient, conf: Conf, url: string): Promise<boolean> {
  if (!(await client.isUp())) return false;
  if (await client.provesIdentity()) return true;
  throw new ClusterRunnerError(
    'IDENTITY_NOT_PROVEN',
    `something answers at ${url} as a ClusterRunner master but cannot prove it holds the secret of ${conf.confFile}, ` +
      'so nothing was sent to it and no worker was started for it. If it is your own master with another secret, use its conf ' +
      `(-c); if it is a local master of an older version, stop it (\`clusterrunner stop -c ${conf.confFile}\`); otherwise another ` +
      'program or user holds that port: set another `port` under [master] (or master_url) in your conf.',
    { status: 403 },
  );
}

async function ensureWorker(client: MasterClient, options: EnsureLocalClusterOptions, timeoutMs: number): Promise<void> {
  const { conf, url, say } = options;
  // The master keeps a worker whose connection dropped listed as alive for a few heartbeats (it may come
  // back); when that worker is ours and its process is gone, the listing must not count.
  const isGone = isOurWorkerGone(conf);
  if (!isGone && (await hasLiveWorker(client))) return;
  const oldPid = readPidFile(pidFilePath(conf, 'worker'));
  if (oldPid !== null && !isGone) {
    // Ours, alive, not listed yet: still connecting (or reconnecting after a master restart).
    await waitFor(`worker ${oldPid} to connect to ${url}`, timeoutMs, options.signal, null, conf, 'worker', () => hasLiveWorker(client));
    return;
  }
  const knownIds = new Set((await listWorkers(client)).map((worker) => worker.id));
  const executors = String(os.availableParallelism());
  const started = startDaemon(conf, 'worker', ['worker', '-c', conf.confFile, '-m', url, '-e', executors]);
  say(`started a local worker with ${executors} executors (pid ${started.child.pid}, log ${logFilePath(conf, 'worker')})`);
  await waitFor(`the local worker to connect to ${url}`, timeoutMs, options.signal, started, conf, 'worker', () => hasLiveWorker(client, knownIds));
}

/** True when worker.pid names a process that is no longer our worker. */
function isOurWorkerGone(conf: Conf): boolean {
  const record = readPidRecord(pidFilePath(conf, 'worker'));
  return record !== null && !isRecordedProcess(record);
}

async function listWorkers(client: MasterClient): Promise<readonly WorkerView[]> {
  try {
    return await client.listWorkers();
  } catch {
    return [];
  }
}

/** Whether the master lists a live worker that takes work, other than those in ignoredIds. */
async function hasLiveWorker(client: MasterClient, ignoredIds: ReadonlySet<number> = new Set()): Promise<boolean> {
  return (await listWorkers(client)).some((worker) => worker.is_alive && !worker.is_in_shutdown_mode && !ignoredIds.has(worker.id));
}

interface Started {
  readonly child: ChildProcess;
  exitCode: number | string | null;
}

function startDaemon(conf: Conf, role: LocalRole, args: readonly string[]): Started {
  const logFile = logFilePath(conf, role);
  const fd = openSync(logFile, 'a');
  writeSync(fd, `\n---- ${new Date().toISOString()} clusterrunner ${args.join(' ')}\n`);
  let child: ChildProcess;
  try {
    // Own process group: the user's Ctrl-C in this terminal must not reach the daemons, and `stop` signals
    // the whole group. The base directory as cwd keeps the daemon from pinning the user's project folder.
    child = spawn(process.execPath, [CLI_PATH, ...args], { cwd: conf.baseDirectory, detached: true, stdio: ['ignore', fd, fd], env: process.env });
  } finally {
    closeSync(fd);
  }
  const started: Started = { child, exitCode: null };
  child.on('exit', (code, signal) => {
    started.exitCode = code ?? signal ?? 'unknown';
  });
  child.on('error', (error) => {
    started.exitCode = errorMessage(error);
  });
  child.unref();
  if (child.pid !== undefined) writePidFile(pidFilePath(conf, role), child.pid);
  return started;
}

async function waitFor(
  what: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  started: Started | null,
  conf: Conf,
  role: LocalRole,
  isReady: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    if (await isReady()) return;
    if (started !== null && started.exitCode !== null) {
      rmSync(pidFilePath(conf, role), { force: true });
      throw new ClusterRunnerError(
        'LOCAL_START_FAILED',
        `the local ${role} exited (${started.exitCode}) before it was ready. The end of ${logFilePath(conf, role)}:\n${logTail(conf, role)}`,
        { status: 503 },
      );
    }
    if (Date.now() >= deadline) {
      throw new ClusterRunnerError(
        'LOCAL_START_FAILED',
        `timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}. Look at ${logFilePath(conf, role)}, ` +
          `then run \`clusterrunner stop -c ${conf.confFile}\` and try again. The end of the log:\n${logTail(conf, role)}`,
        { status: 503 },
      );
    }
    await sleep(POLL_MS, undefined, signal ? { signal } : undefined);
  }
}

function logTail(conf: Conf, role: LocalRole): string {
  try {
    const lines = readFileSync(logFilePath(conf, role), 'utf8').trimEnd().split('\n');
    return lines.slice(-LOG_TAIL_LINES).map((line) => `  ${line}`).join('\n');
  } catch {
    return '  (no log)';
  }
}

async function withStartLock(conf: Conf, deadline: number, signal: AbortSignal | undefined, fn: () => Promise<void>): Promise<void> {
  const lockFile = path.join(conf.baseDirectory, 'local-cluster.lock');
  for (;;) {
    signal?.throwIfAborted();
    try {
      writeFileSync(lockFile, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = readPidFile(lockFile);
    // A lock whose holder is gone (killed mid-start) would otherwise block every later build.
    if (holder === null || !isClusterRunnerProcess(holder)) {
      rmSync(lockFile, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      throw new ClusterRunnerError(
        'LOCAL_START_FAILED',
        `another clusterrunner (pid ${holder}) has been starting the local cluster for too long; if it hangs, stop it and remove ${lockFile}`,
        { status: 503 },
      );
    }
    await sleep(POLL_MS, undefined, signal ? { signal } : undefined);
  }
  try {
    await fn();
  } finally {
    rmSync(lockFile, { force: true });
  }
}

export interface StopOutcome {
  readonly role: LocalRole;
  readonly pid: number;
  /** stopped: it was running and is gone now; stale: the pid file named no process still running (or one started after it); alive: it survived SIGKILL. */
  readonly result: 'stopped' | 'killed' | 'stale' | 'alive';
}

/**
 * Stops the worker, then the master, this host started (their pid files): SIGTERM to the process group, a
 * second SIGTERM for a worker still draining (it then stops its atoms), SIGKILL once kill_grace plus some
 * slack has passed. Pid files are removed. Nothing running is not an error.
 */
export async function stopLocalCluster(conf: Conf): Promise<StopOutcome[]> {
  const outcomes: StopOutcome[] = [];
  // The worker first, while its master is still there to take its last results.
  for (const role of ['worker', 'master'] as const) {
    const pidFile = pidFilePath(conf, role);
    const record = readPidRecord(pidFile);
    if (record === null) {
      rmSync(pidFile, { force: true });
      continue;
    }
    const { pid } = record;
    if (!isRecordedProcess(record)) {
      rmSync(pidFile, { force: true });
      outcomes.push({ role, pid, result: 'stale' });
      continue;
    }
    const result = await stopProcessGroup(record, role === 'worker' ? WORKER_DRAIN_MS : null, conf.killGraceMs + STOP_SLACK_MS);
    if (result !== 'alive') rmSync(pidFile, { force: true });
    outcomes.push({ role, pid, result });
  }
  return outcomes;
}

async function stopProcessGroup(record: PidRecord, drainMs: number | null, graceMs: number): Promise<StopOutcome['result']> {
  const { pid } = record;
  signalGroup(pid, 'SIGTERM');
  if (drainMs !== null && !(await waitForExit(record, drainMs))) {
    // Our daemons take a second SIGTERM as "stop now" (onStopSignals in cli/common.ts).
    if (isRecordedProcess(record)) signalGroup(pid, 'SIGTERM');
  }
  if (await waitForExit(record, graceMs)) return 'stopped';
  if (!isRecordedProcess(record)) return 'stopped';
  signalGroup(pid, 'SIGKILL');
  return (await waitForExit(record, 5_000)) ? 'killed' : 'alive';
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    // Not a group leader (started by hand, not by us): the process alone.
    try {
      process.kill(pid, signal);
    } catch (inner) {
      if ((inner as NodeJS.ErrnoException).code !== 'ESRCH') throw inner;
    }
  }
}

async function waitForExit(record: PidRecord, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRecordedProcess(record)) {
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
  return true;
}
