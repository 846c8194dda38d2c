/**
 * The two load-balance cases and the real local cluster they run on, shared by bench/balance.ts (how well
 * the scheduler fills the executors) and bench/plan.ts (how well the plan endpoint predicts it).
 *   develocity: Develocity's published case, 1000 atoms of 0.5–1.5 s (seeded uniform) on 5 workers × 5 executors;
 *   skewed: 190 atoms of 0.2 s then 15 of 8 s on 2 workers × 5 executors.
 * Atoms are `sleep`s, so the 2 cores are not the limit. BENCH_SCALE=0.1 shortens every atom for a quick check.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMaster, type MasterServer } from '../master/server.ts';
import { createSilentLogger } from '../shared/log.ts';
import { signRequest } from '../shared/auth.ts';
import { localConf } from '../cli/common.ts';
import { seededRandom } from './prng.ts';
import { waitForTerminalStatus } from './build-events.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCALE = Number(process.env['BENCH_SCALE'] ?? 1);
export const SEED = 20261122;

export interface Case {
  readonly name: string;
  readonly workers: number;
  readonly executorsPerWorker: number;
  readonly durations: readonly number[];
}

export function balanceCases(): Case[] {
  const next = seededRandom(SEED);
  return [
    { name: 'develocity', workers: 5, executorsPerWorker: 5, durations: Array.from({ length: 1000 }, () => (0.5 + next()) * SCALE) },
    { name: 'skewed', workers: 2, executorsPerWorker: 5, durations: [...Array(190).fill(0.2 * SCALE), ...Array(15).fill(8 * SCALE)] },
  ];
}

export interface BalanceCluster {
  readonly master: MasterServer;
  readonly secret: string;
  /** The project whose job `Balance` runs the case's atoms. */
  readonly project: string;
  /** The master's SQLite file, read by balance.ts for where each run's time went. */
  readonly database: string;
  stop(): Promise<void>;
}

/**
 * A master and the case's worker processes, and a project with one unique atom string per duration (history
 * is per atom string). `retries`: the job's, for a bench that needs every build to end SUCCESS.
 */
export async function startBalanceCluster(kase: Case, prefix: string, options: { retries?: number } = {}): Promise<BalanceCluster> {
  const base = await mkdtemp(join(tmpdir(), `cr-bench-${prefix}-${kase.name}-`));
  const project = join(base, 'project');
  mkdirSync(project);
  const secret = randomBytes(16).toString('hex');
  writeFileSync(join(project, 'atoms.txt'), kase.durations.map((seconds, index) => `${String(index).padStart(4, '0')}:${seconds.toFixed(4)}\n`).join(''));
  const retries = options.retries === undefined ? '' : `  retries: ${options.retries}\n`;
  writeFileSync(join(project, 'clusterrunner.yaml'), `Balance:\n  commands:\n    - sleep "\${T#*:}"\n  atomizers:\n    - T: cat atoms.txt\n${retries}`);
  const clusterDir = join(base, 'cluster');
  mkdirSync(clusterDir);
  const master = await startMaster({
    host: '127.0.0.1', log: createSilentLogger(), version: 'bench',
    conf: { ...localConf(clusterDir, secret), port: 0, heartbeatIntervalMs: 1000, killGraceMs: 1000, noWorkerTimeoutMs: 60_000 },
  });
  const workers: ChildProcess[] = [];
  for (let index = 0; index < kase.workers; index++) {
    const conf = join(clusterDir, `worker-${index}.conf`);
    writeFileSync(conf, `[general]\nsecret = ${secret}\nbase_directory = ${join(clusterDir, `worker-${index}`)}\n[worker]\nheartbeat_interval = 1\n`, { mode: 0o600 });
    workers.push(spawn(join(ROOT, 'bin', 'clusterrunner'),
      ['worker', '-m', master.url, '-e', String(kase.executorsPerWorker), '-n', `${prefix}-${index}`, '-c', conf, '-q'],
      { stdio: 'ignore', env: { ...process.env, NODE_ENV: 'production' } }));
  }
  for (;;) {
    const { workers: listed } = (await (await fetch(`${master.url}/v1/worker`)).json()) as { workers: unknown[] };
    if (listed.length === kase.workers) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const stop = async () => {
    for (const worker of workers) worker.kill('SIGTERM');
    await Promise.all(workers.map((worker) => new Promise((resolve) => (worker.exitCode !== null ? resolve(null) : worker.on('exit', resolve)))));
    await master.close();
    await rm(base, { recursive: true, force: true });
  };
  return { master, secret, project, database: join(clusterDir, 'clusterrunner.db'), stop };
}

/** Runs the job `Balance` once: POST to terminal in seconds, the build's id and the number of subjobs planned. */
export async function runBalanceBuild(cluster: BalanceCluster): Promise<{ wall: number; buildId: number; subjobs: number }> {
  const { master, secret, project } = cluster;
  const body = JSON.stringify({ type: 'directory', project_directory: project, job_name: 'Balance' });
  const started = performance.now();
  const response = await fetch(`${master.url}/v1/build`, { method: 'POST', body, headers: signRequest(secret, 'POST', '/v1/build', body) });
  if (response.status !== 202) throw new Error(`POST /v1/build answered ${response.status}: ${await response.text()}`);
  const { build_id: id } = (await response.json()) as { build_id: number };
  const status = await waitForTerminalStatus(master.url, secret, id);
  const wall = (performance.now() - started) / 1000;
  if (status !== 'SUCCESS') throw new Error(`bench build ended ${status}`);
  const { build } = (await (await fetch(`${master.url}/v1/build/${id}`)).json()) as { build: { num_subjobs: number } };
  return { wall, buildId: id, subjobs: build.num_subjobs };
}
