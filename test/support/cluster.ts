/**
 * Test support: real masters and workers on loopback (in-process or as real CLI processes), signed API
 * calls, and temp folders that clean themselves up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, openSync, closeSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMaster, type MasterConf, type MasterServer } from '../../master/server.ts';
import { WorkerDaemon } from '../../worker/daemon.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { loadConf } from '../../shared/conf.ts';
import { isTerminalStatus } from '../../shared/api/statuses.ts';

export const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(PROJECT_ROOT, 'bin', 'clusterrunner');

const cleanups: (() => void | Promise<void>)[] = [];

/** Runs every registered cleanup, newest first; call from afterEach/afterAll. */
export async function cleanupAll(): Promise<void> {
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop()!;
    try {
      await cleanup();
    } catch {
      // Best effort: a failed cleanup must not hide the test's own result.
    }
  }
}

export function tempDir(prefix = 'cr-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function digest(secret: string, body: string): string {
  return createHmac('sha512', secret).update(body).digest('hex');
}

export interface TestMaster {
  readonly url: string;
  readonly secret: string;
  readonly base: string;
  readonly server: MasterServer;
  close(): Promise<void>;
}

/** The defaults of clusterrunner.conf, with fast heartbeats and short grace for tests. */
export function masterConf(base: string, secret: string, overrides: Partial<MasterConf> = {}): MasterConf {
  const file = join(base, 'master.conf');
  writeFileSync(file, `[general]\nsecret = ${secret}\nbase_directory = ${base}\n`, { mode: 0o600 });
  const defaults = loadConf({ file, role: 'master', env: {} });
  return { ...defaults, port: 0, heartbeatIntervalMs: 200, killGraceMs: 500, noWorkerTimeoutMs: 0, ...overrides };
}

/** A real master in this process on 127.0.0.1 and a free port; the same base reopens the same database. */
export async function startTestMaster(options: { base?: string; secret?: string; conf?: Partial<MasterConf> } = {}): Promise<TestMaster> {
  const base = options.base ?? tempDir('cr-master-');
  const secret = options.secret ?? randomBytes(16).toString('hex');
  const server = await startMaster({ conf: masterConf(base, secret, options.conf), log: createSilentLogger(), version: 'test', host: '127.0.0.1' });
  const master = { url: server.url, secret, base, server, close: () => server.close() };
  cleanups.push(() => server.close());
  return master;
}

export interface TestWorker {
  readonly daemon: WorkerDaemon;
  stop(): Promise<void>;
}

/** A real worker daemon in this process; its atoms are real processes. */
export async function startTestWorker(
  master: { url: string; secret: string },
  options: { executors?: number; name?: string; base?: string; allowLocalRepositories?: boolean; heartbeatFailureThreshold?: number; minDiskFreeBytes?: number; commandNice?: number } = {},
): Promise<TestWorker> {
  const base = options.base ?? tempDir('cr-worker-');
  const file = join(base, 'worker.conf');
  writeFileSync(file, `[general]\nsecret = ${master.secret}\nbase_directory = ${base}\n`, { mode: 0o600 });
  const daemon = new WorkerDaemon({
    ...loadConf({ file, role: 'worker', env: {} }),
    masterUrl: master.url,
    numExecutors: options.executors ?? 1,
    heartbeatIntervalMs: 200,
    ...(options.heartbeatFailureThreshold === undefined ? {} : { heartbeatFailureThreshold: options.heartbeatFailureThreshold }),
    ...(options.minDiskFreeBytes === undefined ? {} : { minDiskFreeBytes: options.minDiskFreeBytes }),
    ...(options.commandNice === undefined ? {} : { commandNice: options.commandNice }),
    masterUnreachableMs: 10_000,
    killGraceMs: 500,
    allowLocalRepositories: options.allowLocalRepositories ?? true,
    name: options.name ?? `test-worker-${randomBytes(3).toString('hex')}`,
    log: createSilentLogger(),
  });
  await daemon.start();
  const stop = async () => {
    daemon.stopNow();
    await daemon.exited;
  };
  cleanups.push(stop);
  return { daemon, stop };
}

export interface ApiResponse<T = any> {
  readonly status: number;
  readonly body: T;
  readonly text: string;
  readonly headers: Headers;
}

/** An HTTP call as an outside client makes it; bodies are signed with the original's body digest unless sign is false. */
export async function api<T = any>(base: { url: string; secret: string }, method: string, path: string,
  options: { json?: unknown; raw?: string; sign?: boolean; headers?: Record<string, string> } = {}): Promise<ApiResponse<T>> {
  const body = options.raw ?? (options.json === undefined ? undefined : JSON.stringify(options.json));
  const headers: Record<string, string> = { ...options.headers };
  if (body !== undefined) headers['Content-Type'] ??= 'application/json';
  if (options.sign !== false && (body !== undefined || method !== 'GET')) {
    headers['ClusterRunner-Message-Authentication-Digest'] ??= digest(base.secret, body ?? '');
  }
  return readApiResponse<T>(await fetch(`${base.url}${path}`, { method, body, headers, redirect: 'manual' }));
}

/** A response read whole: its text, and that text as JSON (null when it is not JSON). */
export async function readApiResponse<T = any>(response: Response): Promise<ApiResponse<T>> {
  const text = await response.text();
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  return { status: response.status, body: parsed as T, text, headers: response.headers };
}


/** Polls GET /v1/build/:id until pred holds (default: terminal); returns the build. */
export async function waitForBuild(master: { url: string; secret: string }, id: number, pred: (build: any) => boolean = (b) => isTerminalStatus(b.status), timeoutMs = 30_000): Promise<any> {
  const end = Date.now() + timeoutMs;
  let last: any = null;
  while (Date.now() < end) {
    last = (await api(master, 'GET', `/v1/build/${id}`)).body?.build;
    if (last && pred(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`build ${id} did not reach the expected state in ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

export async function postBuild(master: { url: string; secret: string }, params: Record<string, unknown>): Promise<number> {
  const response = await api(master, 'POST', '/v1/build', { json: params });
  if (response.status !== 202) throw new Error(`POST /v1/build answered ${response.status}: ${response.text}`);
  return response.body.build_id as number;
}

export function writeConf(dir: string, name: string, sections: Record<string, Record<string, string | number | boolean>>): string {
  let text = '';
  for (const [section, keys] of Object.entries(sections)) {
    text += `[${section}]\n`;
    for (const [key, value] of Object.entries(keys)) text += `${key} = ${value}\n`;
  }
  const path = join(dir, `${name}.conf`);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

export interface CliProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number | NodeJS.Signals>;
  output(): string;
}

/** Runs bin/clusterrunner as a user would, in its own process group; output goes to a log file. */
export function spawnCli(args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliProcess {
  const dir = tempDir('cr-cli-');
  const logPath = join(dir, 'output.log');
  const fd = openSync(logPath, 'a');
  const child = spawn(CLI, args, { cwd: options.cwd ?? dir, detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, NODE_ENV: 'production', ...options.env } });
  closeSync(fd);
  const exited = new Promise<number | NodeJS.Signals>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal!)));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      await exited;
    }
  });
  return { child, exited, output: () => readFileSync(logPath, 'utf8') };
}

/** Waits until fn returns a truthy value; for conditions a test cannot be told about. */
export async function eventually<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  let lastError: unknown = null;
  while (Date.now() < end) {
    try {
      const value = await fn();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
}
