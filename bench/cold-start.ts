/**
 * Cold start (issue 18): a real master process with no history, one simulated worker (bench/sim-worker.ts)
 * connected and idle, and one directory build whose atomizer prints 100,000 lines. The figure is POST →
 * the first atom_started the worker sends (target ≤ 2 s), in parts from the master's 'build prepared' log
 * line: queue (POST → preparation start), atomize (the atomizer's run and its lines parsed), group (history
 * and subjobs), store (the plan written to SQLite, the live build loaded) and dispatch (prepared → the
 * worker starts the first atom: setup and the first subjob's round trip).
 *
 * Each run starts a new master, so every one is cold; the build is canceled once its first atom started.
 * Environment: BENCH_COLD_ATOMS (default 100000), BENCH_COLD_RUNS (default 3), BENCH_EXECUTORS (default 8).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { signRequest } from '../shared/auth.ts';
import { positiveIntegerFromEnv, startMasterProcess, stopMasterProcess, type MasterProcess } from './master-process.ts';
import { startSimWorker, type SimWorker } from './sim-worker.ts';

const ATOMS = positiveIntegerFromEnv('BENCH_COLD_ATOMS', 100_000);
const RUNS = positiveIntegerFromEnv('BENCH_COLD_RUNS', 3);
const EXECUTORS = positiveIntegerFromEnv('BENCH_EXECUTORS', 8);
const TARGET_S = 2;
/** A run whose first atom has not started by then has failed; the bench says so and stops. */
const FIRST_ATOM_TIMEOUT_MS = 120_000;

interface Prepared {
  /** The log line's time, on this process's performance.now() scale. */
  readonly atMs: number;
  readonly phasesMs: { readonly atomize: number; readonly group: number; readonly store: number };
}

interface ColdRun {
  readonly totalMs: number;
  readonly queueMs: number;
  readonly atomizeMs: number;
  readonly groupMs: number;
  readonly storeMs: number;
  readonly dispatchMs: number;
}

function parsePrepared(line: string): Prepared | null {
  if (!line.includes('"build prepared"')) return null;
  try {
    const record = JSON.parse(line) as { time: number; phasesMs?: Prepared['phasesMs'] };
    if (record.phasesMs === undefined) return null;
    return { atMs: record.time - performance.timeOrigin, phasesMs: record.phasesMs };
  } catch {
    return null;
  }
}

async function send(master: MasterProcess, secret: string, method: 'POST' | 'PUT', path: string, payload: unknown): Promise<Response> {
  const body = JSON.stringify(payload);
  return fetch(`${master.url}${path}`, { method, body, headers: signRequest(secret, method, path, body) });
}

async function coldRun(): Promise<ColdRun> {
  const base = await mkdtemp(join(tmpdir(), 'cr-bench-cold-'));
  const secret = randomBytes(16).toString('hex');
  let master: MasterProcess | null = null;
  let worker: SimWorker | null = null;
  try {
    let prepared: Prepared | null = null;
    master = await startMasterProcess({
      base, secret, logLevel: 'info',
      onLine: (line) => {
        prepared ??= parsePrepared(line);
      },
      masterConf: [
        `max_atoms = ${Math.max(200_000, ATOMS)}`,
        `max_atomizer_output_bytes = ${Math.max(64 * 1024 * 1024, ATOMS * 64)}`,
        'no_worker_timeout_seconds = 0',
      ],
    });
    let resolveFirst: (atMs: number) => void = () => undefined;
    const firstStart = new Promise<number>((resolve) => {
      resolveFirst = resolve;
    });
    worker = startSimWorker({ masterUrl: master.url, secret, name: 'cold-0', numExecutors: EXECUTORS, onAtomStarted: (atMs) => resolveFirst(atMs) });
    await worker.registered;
    // Lines of a realistic length: test files, the usual atoms.
    const atomizer = `seq -f 'tests/unit/test_module_%06g.py' 1 ${ATOMS}`;
    const postedMs = performance.now();
    const response = await send(master, secret, 'POST', '/v1/build', {
      type: 'directory', project_directory: base, config: { commands: ['true'], atomizers: [{ TEST_FILE: atomizer }] },
    });
    if (response.status !== 202) throw new Error(`POST /v1/build: HTTP ${response.status} ${await response.text()}`);
    const { build_id: buildId } = (await response.json()) as { build_id: number };
    let timer: NodeJS.Timeout | undefined;
    const firstMs = await Promise.race([
      firstStart,
      new Promise<never>((_, fail) => {
        timer = setTimeout(() => fail(new Error(`no atom started within ${FIRST_ATOM_TIMEOUT_MS / 1000} s:\n${master!.output.lines.slice(-10).join('\n')}`)), FIRST_ATOM_TIMEOUT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    await send(master, secret, 'PUT', `/v1/build/${buildId}`, { status: 'canceled' }).then((answer) => answer.text());
    const seen = prepared as Prepared | null;
    if (seen === null) throw new Error('the master logged no \'build prepared\' line with its phases');
    const { atomize, group, store } = seen.phasesMs;
    return {
      totalMs: firstMs - postedMs,
      queueMs: seen.atMs - postedMs - atomize - group - store,
      atomizeMs: atomize,
      groupMs: group,
      storeMs: store,
      dispatchMs: firstMs - seen.atMs,
    };
  } finally {
    await worker?.close();
    if (master) await stopMasterProcess(master);
    await rm(base, { recursive: true, force: true });
  }
}

const out = (line: string) => process.stdout.write(`${line}\n`);
out(`cold start: a build of ${ATOMS} atoms on a new master, 1 simulated worker x ${EXECUTORS}, POST → first atom started; ${RUNS} runs`);
const runs: ColdRun[] = [];
for (let i = 0; i < RUNS; i++) {
  const run = await coldRun();
  runs.push(run);
  out(`  run ${i + 1}: ${(run.totalMs / 1000).toFixed(2)} s = queue ${run.queueMs.toFixed(0)} ms + atomize ${run.atomizeMs} ms + group ${run.groupMs} ms` +
    ` + store ${run.storeMs} ms + dispatch ${run.dispatchMs.toFixed(0)} ms`);
}
const sorted = runs.map((run) => run.totalMs).sort((a, b) => a - b);
const medianS = sorted[Math.floor(sorted.length / 2)]! / 1000;
out(`  median ${medianS.toFixed(2)} s, best ${(sorted[0]! / 1000).toFixed(2)} s   [target <= ${TARGET_S} s: ${medianS <= TARGET_S ? 'PASS' : 'FAIL'}]`);
