/**
 * One build of N atoms of `true` on a real local cluster of ours: the master in this process, each worker a
 * process of its own (as in a real cluster: their spawns must not share the master's thread). Timed from the
 * POST to the terminal status (followed on the event stream); optionally with `GET /v1/build/:id` polled from a separate process.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { startMaster } from '../master/server.ts';
import { createSilentLogger } from '../shared/log.ts';
import { signRequest } from '../shared/auth.ts';
import { localConf } from '../cli/common.ts';
import { startStatusPoller } from './master-process.ts';
import { waitForTerminalStatus } from './build-events.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
export function processCpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

export interface ClusterRun {
  readonly seconds: number;
  /** This process (the master and the bench's event stream), user + system. */
  readonly masterCpuS: number;
  /** All worker processes together (their own CPU, spawning included; not their children's). */
  readonly workerCpuS: number;
  /** Status GET latencies from the separate poller, when asked for. */
  readonly statusP50Ms: number | null;
  readonly statusP99Ms: number | null;
  readonly statusRequests: number;
  /**
   * As the master saw it: the mean time an executor spent between the end of one atom and the start of its
   * next (the hand-over: result in, next subjob out, spawn), and the mean time inside an atom.
   */
  readonly handoffMs: number;
  readonly inAtomMs: number;
}

export interface ClusterOptions {
  readonly workers: number;
  readonly executors: number;
  readonly atoms: number;
  /** Poll GET /v1/build/:id from a separate process every this many ms; none when null. */
  readonly pollIntervalMs: number | null;
  /** Run the workers with `node --cpu-prof` into this folder. */
  readonly cpuProfileDir: string | null;
  /** Builds run one after another on the same master and workers (default 1); a run is returned for each. */
  readonly builds?: number;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** The first few failed atoms' exit codes and console output, from the results folder. */
function describeFailures(base: string): string {
  const found = spawnSync('grep', ['-rLx', '0', '--include=clusterrunner_exit_code', base], { encoding: 'utf8' });
  return found.stdout.split('\n').filter(Boolean).slice(0, 3).map((file) => {
    const dir = dirname(file);
    const read = (name: string) => {
      try {
        return readFileSync(join(dir, name), 'utf8').trim().slice(0, 400);
      } catch {
        return '(none)';
      }
    };
    return `${basename(dir)}: exit ${read('clusterrunner_exit_code')}, output ${JSON.stringify(read('clusterrunner_console_output'))}`;
  }).join('; ') || 'no failed atom found in the results';
}

/**
 * From the master's attempts (its own clock): executor time inside atoms, and the rest of the executors' time
 * over the run spread over the atoms (the hand-over between one atom and the next, plus the start and the end).
 */
function handoffTimes(database: string, buildId: number, executors: number, seconds: number): { handoffMs: number; inAtomMs: number } {
  const db = new Database(database, { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare('SELECT count(*) AS atoms, sum(finished - started) AS inside FROM attempts WHERE build_id = ?').get(buildId) as { atoms: number; inside: number };
    const insideMs = row.inside * 1000;
    return { inAtomMs: insideMs / row.atoms, handoffMs: (executors * seconds * 1000 - insideMs) / row.atoms };
  } finally {
    db.close();
  }
}

export async function runOurCluster(options: ClusterOptions): Promise<ClusterRun[]> {
  const base = await mkdtemp(join(tmpdir(), 'cr-bench-'));
  const secret = randomBytes(16).toString('hex');
  const conf = localConf(base, secret);
  const master = await startMaster({
    host: '127.0.0.1', log: createSilentLogger(), version: 'bench',
    conf: { ...conf, port: 0, heartbeatIntervalMs: 1000, killGraceMs: 1000, noWorkerTimeoutMs: 60_000 },
  });
  const workers: ChildProcess[] = [];
  const exits: Promise<unknown>[] = [];
  let isStopping = false;
  try {
    const startWorker = (i: number) => {
      const workerConf = join(base, `worker-${i}.conf`);
      const nice = process.env['BENCH_COMMAND_NICE'] ? `command_nice = ${process.env['BENCH_COMMAND_NICE']}\n` : '';
      writeFileSync(workerConf, `[general]\nsecret = ${secret}\nbase_directory = ${join(base, `worker-${i}`)}\n[worker]\nheartbeat_interval = 1\n${nice}` +
        // Detached (below), a worker outlives a bench stopped by Ctrl-C: it then ends once its master is gone.
        'master_unreachable_seconds = 30\n', { mode: 0o600 });
      const profile = options.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`] : [];
      const worker = spawn(process.execPath, [...profile, join(ROOT, 'bin', 'clusterrunner'), 'worker', '-m', master.url, '-e', String(options.executors), '-n', `bench-${i}`, '-c', workerConf, '-q'], {
        stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NODE_ENV: 'production' },
        // A session of its own, as `clusterrunner` and the pools start a worker (one autogroup, not the bench's).
        detached: true,
      });
      // The last of what it said on stderr, to tell why it is gone if it goes.
      let stderr = '';
      worker.stderr!.on('data', (chunk: Buffer) => {
        stderr = (stderr + chunk.toString('utf8')).slice(-2000);
      });
      workers.push(worker);
      exits.push(new Promise((resolve) => worker.on('exit', (code, signal) => {
        if (!isStopping) process.stderr.write(`bench worker ${i} exited early (${code ?? signal}): ${stderr}\n`);
        resolve(code);
      })));
    };
    const waitForWorkers = async (count: number) => {
      const joinDeadline = performance.now() + 120_000;
      for (;;) {
        const { workers: joined } = (await (await fetch(`${master.url}/v1/worker`)).json()) as { workers: unknown[] };
        if (joined.length >= count) return;
        if (performance.now() > joinDeadline || workers.some((worker) => worker.exitCode !== null)) {
          throw new Error(`only ${joined.length} of ${count} workers joined`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    // One first: the launcher may have to write its cached bundle, which workers started together would race on.
    startWorker(0);
    await waitForWorkers(1);
    for (let i = 1; i < options.workers; i++) startWorker(i);
    await waitForWorkers(options.workers);
    const body = JSON.stringify({ type: 'directory', project_directory: base, config: { commands: ['true'], atomizers: [{ N: `seq 1 ${options.atoms}` }] } });
    const workerCpu = () => workers.reduce((sum, worker) => sum + processCpuSeconds(worker.pid!), 0);
    // A master lives for many builds; its first also pays for compiling the code it runs for the first time.
    const runBuild = async (): Promise<ClusterRun> => {
      const started = performance.now();
      const cpuBefore = process.cpuUsage();
      const workerCpuBefore = workerCpu();
      const response = await fetch(`${master.url}/v1/build`, { method: 'POST', body, headers: signRequest(secret, 'POST', '/v1/build', body) });
      const { build_id: id } = (await response.json()) as { build_id: number };
      const poll = options.pollIntervalMs === null ? null : startStatusPoller(master.url, id, { intervalMs: options.pollIntervalMs, timeoutMs: 3_600_000, archiveTimeoutMs: 600_000 }).report;
      const status = await waitForTerminalStatus(master.url, secret, id);
      const seconds = (performance.now() - started) / 1000;
      const cpu = process.cpuUsage(cpuBefore);
      const workerCpuS = workerCpu() - workerCpuBefore;
      if (status !== 'SUCCESS') {
        const { build } = (await (await fetch(`${master.url}/v1/build/${id}`)).json()) as { build: unknown };
        throw new Error(`bench build ended ${status}: ${JSON.stringify(build).slice(0, 1500)}; ${describeFailures(base)}`);
      }
      const report = poll === null ? null : await poll;
      const { handoffMs, inAtomMs } = handoffTimes(join(base, 'clusterrunner.db'), id, options.workers * options.executors, seconds);
      const sorted = report === null ? [] : [...report.latenciesMs].sort((a, b) => a - b);
      return {
        seconds, masterCpuS: (cpu.user + cpu.system) / 1e6, workerCpuS,
        statusP50Ms: report === null ? null : percentile(sorted, 50),
        statusP99Ms: report === null ? null : percentile(sorted, 99),
        statusRequests: sorted.length, handoffMs, inAtomMs,
      };
    };
    const runs: ClusterRun[] = [];
    for (let i = 0; i < (options.builds ?? 1); i++) runs.push(await runBuild());
    return runs;
  } finally {
    isStopping = true;
    for (const worker of workers) worker.kill('SIGTERM');
    await Promise.all(exits);
    await master.close();
    await rm(base, { recursive: true, force: true });
  }
}
