/**
 * Per-atom overhead: 1000 atoms of `true` on one worker with 4 executors, from POST to terminal, against
 * spawning the same 1000 `bash -c` processes 4 at a time from Node in the same run.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startMaster } from '../master/server.ts';
import { createSilentLogger } from '../shared/log.ts';
import { signRequest } from '../shared/auth.ts';
import { localConf } from '../cli/common.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ATOMS = Number(process.env['BENCH_ATOMS'] ?? 1000);
const EXECUTORS = 4;

async function rawSpawns(): Promise<number> {
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < ATOMS) {
      next++;
      await new Promise<void>((resolve, reject) => {
        const child = spawn('/bin/bash', ['-c', 'set -o pipefail; true'], { stdio: 'ignore', detached: true });
        child.on('error', reject);
        child.on('exit', () => resolve());
      });
    }
  };
  await Promise.all(Array.from({ length: EXECUTORS }, lane));
  return (performance.now() - started) / 1000;
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function processCpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

interface ClusterFigures {
  readonly seconds: number;
  readonly masterCpuS: number;
  readonly workerCpuS: number;
}

async function clusterRun(): Promise<ClusterFigures> {
  const base = await mkdtemp(join(tmpdir(), 'cr-bench-'));
  const secret = randomBytes(16).toString('hex');
  const log = createSilentLogger();
  const conf = localConf(base, secret);
  const master = await startMaster({
    host: '127.0.0.1', log, version: 'bench',
    conf: { ...conf, port: 0, heartbeatIntervalMs: 1000, killGraceMs: 1000, noWorkerTimeoutMs: 60_000 },
  });
  // The worker runs as its own process, as it does in a real cluster: its spawns must not share the master's thread.
  const workerConf = join(base, 'worker.conf');
  writeFileSync(workerConf, `[general]\nsecret = ${secret}\nbase_directory = ${join(base, 'worker')}\n[worker]\nheartbeat_interval = 1\n`, { mode: 0o600 });
  const worker = spawn(join(ROOT, 'bin', 'clusterrunner'), ['worker', '-m', master.url, '-e', String(EXECUTORS), '-c', workerConf, '-q'], {
    stdio: 'ignore', env: { ...process.env, NODE_ENV: 'production' },
  });
  const workerExited = new Promise((resolve) => worker.on('exit', resolve));
  for (;;) {
    const { workers } = (await (await fetch(`${master.url}/v1/worker`)).json()) as { workers: unknown[] };
    if (workers.length > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  try {
    const body = JSON.stringify({ type: 'directory', project_directory: base, config: { commands: ['true'], atomizers: [{ N: `seq 1 ${ATOMS}` }] } });
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    const workerCpuBefore = processCpuSeconds(worker.pid!);
    const response = await fetch(`${master.url}/v1/build`, { method: 'POST', body, headers: signRequest(secret, 'POST', '/v1/build', body) });
    const { build_id: id } = (await response.json()) as { build_id: number };
    for (;;) {
      const { build } = (await (await fetch(`${master.url}/v1/build/${id}`)).json()) as { build: { status: string } };
      if (['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'].includes(build.status)) {
        if (build.status !== 'SUCCESS') throw new Error(`bench build ended ${build.status}`);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    return { seconds, masterCpuS: (cpu.user + cpu.system) / 1e6, workerCpuS: processCpuSeconds(worker.pid!) - workerCpuBefore };
  } finally {
    worker.kill('SIGTERM');
    await workerExited;
    await master.close();
    await rm(base, { recursive: true, force: true });
  }
}

const raw = await rawSpawns();
const cluster = await clusterRun();
process.stdout.write(`overhead: ${ATOMS} atoms of \`true\`, 1 worker process x ${EXECUTORS} executors\n`);
process.stdout.write(`  raw bash spawns, ${EXECUTORS} at a time: ${raw.toFixed(2)} s\n`);
process.stdout.write(`  ClusterRunner, POST to terminal:      ${cluster.seconds.toFixed(2)} s\n`);
process.stdout.write(`  ratio: ${(cluster.seconds / raw).toFixed(2)} (target <= 1.5)\n`);
// CPU per atom shows where the overhead is even on a busy machine, where wall times are noisy.
const perAtomMs = (seconds: number) => ((seconds * 1000) / ATOMS).toFixed(2);
process.stdout.write(`  CPU per atom: master ${perAtomMs(cluster.masterCpuS)} ms (incl. its threads), worker ${perAtomMs(cluster.workerCpuS)} ms (incl. spawning)\n`);
