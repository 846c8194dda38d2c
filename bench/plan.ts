/**
 * Estimates against reality (SPEC §15): on a real local cluster, a cold build gives the job its history;
 * then `GET /v2/jobs/Balance/plan?executors=N` predicts the next build, which runs and is timed from POST to
 * terminal. The same two cases as bench/balance.ts:
 *   develocity: 1000 atoms of 0.5–1.5 s (seeded uniform) on 5 workers × 5 executors;
 *   skewed: 190 atoms of 0.2 s then 15 of 8 s on 2 workers × 5 executors.
 * Target: predicted within 5% of measured. Also printed: the plan for other executor counts (what the
 * question "how many executors for 5 minutes" reads). BENCH_PLAN=develocity|skewed runs one case;
 * BENCH_SCALE=0.1 shortens every atom for a quick check.
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

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCALE = Number(process.env['BENCH_SCALE'] ?? 1);
const SEED = 20261122;

interface Case {
  readonly name: string;
  readonly workers: number;
  readonly executorsPerWorker: number;
  readonly durations: readonly number[];
}

const CASES: readonly Case[] = [
  (() => {
    const next = seededRandom(SEED);
    return { name: 'develocity', workers: 5, executorsPerWorker: 5, durations: Array.from({ length: 1000 }, () => (0.5 + next()) * SCALE) };
  })(),
  { name: 'skewed', workers: 2, executorsPerWorker: 5, durations: [...Array(190).fill(0.2 * SCALE), ...Array(15).fill(8 * SCALE)] },
];

async function startCluster(base: string, secret: string, kase: Case): Promise<{ master: MasterServer; workers: ChildProcess[] }> {
  const master = await startMaster({
    host: '127.0.0.1', log: createSilentLogger(), version: 'bench',
    conf: { ...localConf(base, secret), port: 0, heartbeatIntervalMs: 1000, killGraceMs: 1000, noWorkerTimeoutMs: 60_000 },
  });
  const workers: ChildProcess[] = [];
  for (let index = 0; index < kase.workers; index++) {
    const dir = join(base, `worker-${index}`);
    const conf = join(base, `worker-${index}.conf`);
    writeFileSync(conf, `[general]\nsecret = ${secret}\nbase_directory = ${dir}\n[worker]\nheartbeat_interval = 1\n`, { mode: 0o600 });
    workers.push(spawn(join(ROOT, 'bin', 'clusterrunner'),
      ['worker', '-m', master.url, '-e', String(kase.executorsPerWorker), '-n', `plan-${index}`, '-c', conf, '-q'],
      { stdio: 'ignore', env: { ...process.env, NODE_ENV: 'production' } }));
  }
  for (;;) {
    const { workers: listed } = (await (await fetch(`${master.url}/v1/worker`)).json()) as { workers: unknown[] };
    if (listed.length === kase.workers) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { master, workers };
}

/** POST to terminal, in seconds. */
async function runBuild(master: MasterServer, secret: string, project: string): Promise<number> {
  const body = JSON.stringify({ type: 'directory', project_directory: project, job_name: 'Balance' });
  const started = performance.now();
  const response = await fetch(`${master.url}/v1/build`, { method: 'POST', body, headers: signRequest(secret, 'POST', '/v1/build', body) });
  if (response.status !== 202) throw new Error(`POST /v1/build answered ${response.status}: ${await response.text()}`);
  const { build_id: id } = (await response.json()) as { build_id: number };
  for (;;) {
    const { build } = (await (await fetch(`${master.url}/v1/build/${id}`)).json()) as { build: { status: string } };
    if (['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'].includes(build.status)) {
      if (build.status !== 'SUCCESS') throw new Error(`bench build ended ${build.status}`);
      return (performance.now() - started) / 1000;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function predict(master: MasterServer, executors: number): Promise<number> {
  const response = await fetch(`${master.url}/v2/jobs/Balance/plan?executors=${executors}`);
  const plan = (await response.json()) as { predicted_seconds: number | null };
  if (plan.predicted_seconds === null) throw new Error('no prediction with history');
  return plan.predicted_seconds;
}

async function runCase(kase: Case): Promise<number> {
  const base = await mkdtemp(join(tmpdir(), `cr-bench-plan-${kase.name}-`));
  const project = join(base, 'project');
  mkdirSync(project);
  const secret = randomBytes(16).toString('hex');
  writeFileSync(join(project, 'atoms.txt'), kase.durations.map((seconds, index) => `${String(index).padStart(4, '0')}:${seconds.toFixed(4)}\n`).join(''));
  writeFileSync(join(project, 'clusterrunner.yaml'), 'Balance:\n  commands:\n    - sleep "${T#*:}"\n  atomizers:\n    - T: cat atoms.txt\n');
  mkdirSync(join(base, 'cluster'));
  const { master, workers } = await startCluster(join(base, 'cluster'), secret, kase);
  const executors = kase.workers * kase.executorsPerWorker;
  const serial = kase.durations.reduce((sum, seconds) => sum + seconds, 0);
  process.stdout.write(`${kase.name}: ${kase.durations.length} atoms, ${serial.toFixed(1)} s serial, ${kase.workers} workers x ${kase.executorsPerWorker} executors\n`);
  try {
    const cold = await runBuild(master, secret, project);
    process.stdout.write(`  cold build (gives the history) ${cold.toFixed(2)} s\n`);
    const others = [1, Math.max(1, executors >> 1), executors * 2].map(async (count) => `${count}: ${(await predict(master, count)).toFixed(1)} s`);
    process.stdout.write(`  plan for other executor counts: ${(await Promise.all(others)).join(', ')}\n`);
    const predicted = await predict(master, executors);
    const measured = await runBuild(master, secret, project);
    const error = (predicted - measured) / measured;
    process.stdout.write(`  with history: predicted ${predicted.toFixed(2)} s, measured ${measured.toFixed(2)} s, error ${(error * 100).toFixed(1)}%\n`);
    return error;
  } finally {
    for (const worker of workers) worker.kill('SIGTERM');
    await Promise.all(workers.map((worker) => new Promise((resolve) => (worker.exitCode !== null ? resolve(null) : worker.on('exit', resolve)))));
    await master.close();
    await rm(base, { recursive: true, force: true });
  }
}

const only = process.env['BENCH_PLAN'];
const errors: string[] = [];
for (const kase of CASES) {
  if (only === undefined || only === kase.name) errors.push(`${kase.name} ${((await runCase(kase)) * 100).toFixed(1)}%`);
}
process.stdout.write(`plan error (predicted - measured) / measured: ${errors.join(', ')}; target within ±5%\n`);
