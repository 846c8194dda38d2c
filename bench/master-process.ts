/**
 * A real master process for benchmarks (`bin/clusterrunner master` with a conf file of its own), and what the
 * benches read of it from /proc. Shared by throughput.ts and cold-start.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StatusPollReport } from './status-poller.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Output lines kept for a report when the master fails, and the longest kept whole. */
const KEPT_LINES = 40;
const KEPT_LINE_CHARS = 600;

export function positiveIntegerFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, not "${raw}"`);
  return value;
}

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/** One field of /proc/<pid>/status in MB (VmRSS, VmHWM); NaN when the process is gone. */
export function procStatusMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds (user + system) a process has used so far (Linux). */
export function procCpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** The master's output, last lines kept, warnings and errors counted (pino JSON levels 40 and 50+). */
export class MasterOutput {
  readonly lines: string[] = [];
  warnings = 0;
  errors = 0;
  #partial = '';
  readonly #onLine: ((line: string) => void) | undefined;

  constructor(onLine?: (line: string) => void) {
    this.#onLine = onLine;
  }

  push(chunk: Buffer): void {
    const text = this.#partial + chunk.toString('utf8');
    const lines = text.split('\n');
    this.#partial = lines.pop() ?? '';
    for (const line of lines) {
      this.#onLine?.(line);
      if (line.includes('"level":40')) this.warnings++;
      if (/"level":(50|60)/.test(line)) this.errors++;
      this.lines.push(line.length > KEPT_LINE_CHARS ? `${line.slice(0, KEPT_LINE_CHARS)}…` : line);
      if (this.lines.length > KEPT_LINES) this.lines.shift();
    }
  }
}

export interface MasterProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly output: MasterOutput;
  readonly exited: Promise<number | null>;
}

export interface MasterProcessOptions {
  readonly base: string;
  readonly secret: string;
  /** More lines of the [master] section (`key = value`). */
  readonly masterConf: readonly string[];
  readonly logLevel?: 'warn' | 'info';
  /** Runs the master with `node --cpu-prof` writing its profile here. */
  readonly cpuProfileDir?: string | null;
  /** Every line the master prints, as it comes. */
  readonly onLine?: (line: string) => void;
}

/** Tries a few ports: another process may take the free port found before the master binds it. */
export async function startMasterProcess(options: MasterProcessOptions): Promise<MasterProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (error) {
      if (attempt >= 3 || !String(error).includes('EADDRINUSE')) throw error;
    }
  }
}

async function startOnce(options: MasterProcessOptions): Promise<MasterProcess> {
  const port = await freePort();
  const confFile = join(options.base, 'clusterrunner.conf');
  writeFileSync(confFile, [
    '[general]',
    `secret = ${options.secret}`,
    `base_directory = ${options.base}`,
    `log_level = ${options.logLevel ?? 'warn'}`,
    '[master]',
    `port = ${port}`,
    ...options.masterConf,
    '',
  ].join('\n'), { mode: 0o600 });
  const nodeFlags = options.cpuProfileDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfileDir] : [];
  // Node and V8 flags for the master alone, to try a setting without editing the product (memory, GC).
  nodeFlags.push(...(process.env['BENCH_MASTER_NODE_FLAGS'] ?? '').split(' ').filter((flag) => flag !== ''));
  const child = spawn(process.execPath, [...nodeFlags, join(ROOT, 'bin', 'clusterrunner'), 'master', '-c', confFile], {
    cwd: options.base, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_ENV: 'production' },
  });
  const output = new MasterOutput(options.onLine);
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
  const listening = new Promise<void>((done, fail) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output.push(chunk);
      if (chunk.toString('utf8').includes(' port ')) done();
    });
    child.stderr!.on('data', (chunk: Buffer) => output.push(chunk));
    void exited.then((code) => fail(new Error(`the master exited (code ${code}) before listening:\n${output.lines.join('\n')}`)));
    setTimeout(() => fail(new Error('the master did not start listening within 60 s')), 60_000).unref();
  });
  await listening;
  return { child, url: `http://127.0.0.1:${port}`, output, exited };
}

/**
 * SIGTERM (graceful); a second SIGTERM after a while makes the master exit at once (cli/common.ts), which
 * still writes a --cpu-prof profile; SIGKILL only as the last resort. A graceful close waits for a build
 * being archived, which is why the second signal is needed after a stalled archive.
 */
export async function stopMasterProcess(master: MasterProcess): Promise<void> {
  if (master.child.exitCode !== null || master.child.signalCode !== null) return;
  master.child.kill('SIGTERM');
  const again = setTimeout(() => master.child.kill('SIGTERM'), 15_000);
  const kill = setTimeout(() => master.child.kill('SIGKILL'), 30_000);
  await master.exited;
  clearTimeout(again);
  clearTimeout(kill);
}

export interface StatusPoller {
  readonly report: Promise<StatusPollReport>;
  /** Asks for the report so far (the poller prints it on SIGTERM). */
  stop(): void;
}

/**
 * bench/status-poller.ts in a process of its own, so that its latencies are the master's, not the event-loop
 * lag of a bench process busy with its workers.
 */
export function startStatusPoller(masterUrl: string, buildId: number, options: { intervalMs: number; timeoutMs: number; archiveTimeoutMs: number }): StatusPoller {
  const child = spawn(process.execPath, [
    '--import', 'tsx', join(ROOT, 'bench', 'status-poller.ts'),
    masterUrl, String(buildId), String(options.intervalMs), String(options.timeoutMs), String(options.archiveTimeoutMs),
  ], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  const report = new Promise<StatusPollReport>((done, fail) => {
    child.on('error', fail);
    child.on('exit', (code) => {
      try {
        done(JSON.parse(stdout) as StatusPollReport);
      } catch {
        fail(new Error(`the status poller exited with ${code} and no report: ${stdout.slice(0, 500)}`));
      }
    });
  });
  return { report, stop: () => child.exitCode === null && child.kill('SIGTERM') };
}
