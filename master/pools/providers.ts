/**
 * How a pool starts and stops one worker (SPEC §13): `local` runs `clusterrunner worker` on the master's host;
 * `command` runs the pool's start_command and stop_command. Only processes started here are ever signalled.
 */
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commandEnvironment } from '../../shared/conf.ts';
import { errorMessage } from '../../shared/errors.ts';
import { OutputTail } from '../../shared/output-tail.ts';
import { isGroupAlive, spawnShell, type GroupProcess } from '../../shared/process.ts';
import type { PoolConf } from '../../shared/pool-conf.ts';

const CLI_PATH = fileURLToPath(new URL('../../bin/clusterrunner', import.meta.url));
/** What a failed start's message quotes of its output. */
const TAIL_BYTES = 2048;
/** A stop command must not hold a pool for ever. */
const STOP_COMMAND_TIMEOUT_MS = 60_000;
const POLL_MS = 50;

export interface ProviderContext {
  /** `<base_directory>/pools`: one folder per pool worker (its base directory and log). */
  readonly poolsRoot: string;
  /** The master's conf file: local workers read the secret and [worker] keys from it. */
  readonly confFile: string;
  /** What a pool worker connects to. */
  readonly masterUrl: string;
  readonly killGraceMs: number;
}

/** One start of one pool worker: the process we started, and how it ended. */
export interface StartedWorker {
  /** local: the worker (also its process group); command: the start command's process group. */
  readonly pid: number | null;
  /** Null while it runs; set when it ended, with the tail of its output for messages. */
  ended: { readonly code: number; readonly tail: string } | null;
  /** Only for a process of this master process (not for one found again after a restart). */
  readonly group: GroupProcess | null;
}

export function workerDir(context: ProviderContext, pool: PoolConf, name: string): string {
  return join(context.poolsRoot, pool.name, name);
}

/** Starts one worker; never throws (a failure to spawn is an ended start). */
export function startPoolWorker(context: ProviderContext, pool: PoolConf, name: string): StartedWorker {
  const dir = workerDir(context, pool, name);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    return { pid: null, ended: { code: -1, tail: `cannot create ${dir}: ${errorMessage(error)}` }, group: null };
  }
  return pool.provider === 'local' ? startLocal(context, pool, name, dir) : startCommand(context, pool, name, dir);
}

function startLocal(context: ProviderContext, pool: PoolConf, name: string, dir: string): StartedWorker {
  const logFile = join(dir, 'worker.log');
  const fd = openSync(logFile, 'a', 0o600);
  const started: { pid: number | null; ended: StartedWorker['ended']; group: null } = { pid: null, ended: null, group: null };
  try {
    // Its own base directory: workers sharing one would share a git cache and workspace folders.
    // Labels go by environment, so that a worker without a labels key simply ignores them.
    const child = spawn(process.execPath, [
      CLI_PATH, 'worker', '-c', context.confFile, '-m', context.masterUrl, '-e', String(pool.executorsPerWorker),
      '-n', name, '--pool', pool.name,
    ], {
      cwd: dir, detached: true, stdio: ['ignore', fd, fd],
      env: { ...process.env, CLUSTERRUNNER_BASE_DIRECTORY: dir, ...(pool.labels.length > 0 ? { CLUSTERRUNNER_LABELS: pool.labels.join(',') } : {}) },
    });
    // Detached and unreferenced: the worker outlives a master restart and is found again (pool-manager.ts).
    child.unref();
    started.pid = child.pid ?? null;
    child.once('error', (error) => {
      started.ended ??= { code: -1, tail: `cannot start the worker: ${error.message}` };
    });
    child.once('exit', (code, signal) => {
      started.ended ??= { code: code ?? -1, tail: signal === null ? readTail(logFile) : `killed by ${signal}` };
    });
  } finally {
    closeSync(fd);
  }
  return started;
}

function startCommand(context: ProviderContext, pool: PoolConf, name: string, dir: string): StartedWorker {
  const tail = new OutputTail(TAIL_BYTES);
  const group = spawnShell(pool.startCommand!, {
    cwd: dir, env: commandEnv(context, pool, name), graceMs: context.killGraceMs, onOutput: (chunk) => tail.push(chunk),
  });
  const started: StartedWorker = { pid: group.pid === 0 ? null : group.pid, ended: null, group };
  // A start command may stay running (an ssh line) or return once the worker is launched (docker run -d):
  // only a non-zero exit is a failure.
  void group.result.then((result) => {
    started.ended = { code: result.exitCode, tail: tail.text() };
  });
  return started;
}

/**
 * Stops one pool worker for good: the stop command (provider command), then whatever is left of the
 * process group we started. A worker that is drained first has usually exited by itself already.
 */
export async function stopPoolWorker(context: ProviderContext, pool: PoolConf, name: string, started: StartedWorker | null): Promise<string | null> {
  let problem: string | null = null;
  if (pool.provider === 'command' && pool.stopCommand !== null) {
    const tail = new OutputTail(TAIL_BYTES);
    const dir = workerDir(context, pool, name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const result = await spawnShell(pool.stopCommand, {
      cwd: dir, env: commandEnv(context, pool, name), graceMs: context.killGraceMs, timeoutMs: STOP_COMMAND_TIMEOUT_MS,
      onOutput: (chunk) => tail.push(chunk),
    }).result;
    if (result.exitCode !== 0) problem = `stop command exited with ${result.exitCode}: ${tail.text().trim()}`;
  }
  if (started?.group) await started.group.stop('worker_stop');
  else if (started?.pid != null && isOurs(pool, name, started.pid)) await killGroup(started.pid, context.killGraceMs);
  rmSync(workerDir(context, pool, name), { recursive: true, force: true });
  return problem;
}

/**
 * Whether a pid remembered from before a restart is still our worker: the pid may have been reused, so
 * a local worker is checked by its command line where /proc tells it.
 */
export function isOurs(pool: PoolConf | { provider: string }, name: string, pid: number): boolean {
  if (!isGroupAlive(pid)) return false;
  if (pool.provider !== 'local') return true;
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return args.some((arg, index) => arg === '-n' && args[index + 1] === name);
  } catch {
    // No /proc (macOS): the group is alive, which is all there is to go by.
    return process.platform !== 'linux';
  }
}

/** SIGTERM twice (a worker drains on the first, stops its atoms on the second), SIGKILL after the grace. */
export async function killGroup(pgid: number, graceMs: number): Promise<void> {
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(-pgid, name);
    } catch {
      // Gone already.
    }
  };
  signal('SIGTERM');
  await sleep(POLL_MS);
  signal('SIGTERM');
  const deadline = Date.now() + graceMs + 2_000;
  while (isGroupAlive(pgid) && Date.now() < deadline) await sleep(POLL_MS);
  if (isGroupAlive(pgid)) signal('SIGKILL');
}

function commandEnv(context: ProviderContext, pool: PoolConf, name: string): NodeJS.ProcessEnv {
  return commandEnvironment({
    POOL: pool.name, WORKER_NAME: name, MASTER_URL: context.masterUrl,
    EXECUTORS_PER_WORKER: String(pool.executorsPerWorker), LABELS: pool.labels.join(','),
  });
}

/** The last TAIL_BYTES of a worker's log, without reading the rest (it may be megabytes). */
function readTail(file: string): string {
  let fd: number | null = null;
  try {
    fd = openSync(file, 'r');
    const size = fstatSync(fd).size;
    const buffer = Buffer.alloc(Math.min(TAIL_BYTES, size));
    readSync(fd, buffer, 0, buffer.length, size - buffer.length);
    return buffer.toString('utf8');
  } catch {
    return '';
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
