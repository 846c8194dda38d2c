/**
 * Per-atom overhead (issue 18): atoms of `true`, POST to terminal, against the cost of the same spawns made by
 * the cheapest spawner here (bench/spawn-limit.ts), measured in the same run.
 * - narrow: BENCH_ATOMS (1000) atoms on 1 worker process x 4 executors; target <= 1.25x the limit. 0 skips it.
 * - wide: BENCH_WIDE_ATOMS (10,000) atoms on 10 workers x 8 executors, with GET /v1/build/:id polled every
 *   25 ms from a separate process; target <= 1.3x the limit (status p99 target 20 ms). BENCH_WIDE_ATOMS=0 skips it.
 * Each row runs two builds on the same cluster: a new master's (and workers') first, and the next, as a
 * long-lived cluster runs them.
 * BENCH_CPU_PROF=<dir> runs the workers with `node --cpu-prof` (bench/cpu-profile-summary.ts reads them).
 * BENCH_COMMAND_NICE=<0-19> sets the workers' command_nice (default: the conf's default, 10), to compare.
 * The workers run in sessions of their own, as `clusterrunner` and the pools start them.
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { formatSpawnLimit, measureSpawnLimit } from './spawn-limit.ts';
import { runOurCluster, type ClusterRun } from './local-cluster.ts';

const ATOMS = Number(process.env['BENCH_ATOMS'] ?? 1000);
const WIDE_ATOMS = Number(process.env['BENCH_WIDE_ATOMS'] ?? 10_000);
const CPU_PROFILE_DIR = process.env['BENCH_CPU_PROF'] ? resolve(process.env['BENCH_CPU_PROF']) : null;
if (CPU_PROFILE_DIR) mkdirSync(CPU_PROFILE_DIR, { recursive: true });

const perAtomMs = (seconds: number, atoms: number) => ((seconds * 1000) / atoms).toFixed(2);

function printRow(label: string, run: ClusterRun, atoms: number, limitS: number, target: number): void {
  process.stdout.write(`  ${label}: ${run.seconds.toFixed(2)} s, ${(run.seconds / limitS).toFixed(2)}x the limit (target <= ${target})\n`);
  // CPU per atom shows where the overhead is even on a busy machine, where wall times are noisy.
  process.stdout.write(`    CPU per atom: master ${perAtomMs(run.masterCpuS, atoms)} ms (incl. its threads), workers ${perAtomMs(run.workerCpuS, atoms)} ms\n`);
  process.stdout.write(`    per atom, as the master saw it: ${run.inAtomMs.toFixed(2)} ms in the atom, ${run.handoffMs.toFixed(2)} ms of executor time outside atoms\n`);
  if (run.statusP99Ms !== null) {
    process.stdout.write(`    GET /v1/build/:id from a separate poller: ${run.statusRequests} requests, p50 ${run.statusP50Ms!.toFixed(1)} ms, p99 ${run.statusP99Ms.toFixed(1)} ms (target <= 20)\n`);
  }
}

process.stdout.write(`overhead: atoms of \`true\`, POST to terminal, against the cheapest spawner's cost for the same spawns\n`);
if (ATOMS > 0) {
  const narrowLimit = await measureSpawnLimit(ATOMS, 4);
  process.stdout.write(`  ${formatSpawnLimit(narrowLimit, ATOMS, 4)}\n`);
  const [first, next] = await runOurCluster({ workers: 1, executors: 4, atoms: ATOMS, pollIntervalMs: null, cpuProfileDir: CPU_PROFILE_DIR, builds: 2 });
  printRow(`${ATOMS} atoms, 1 worker x 4 executors, a new master's first build`, first!, ATOMS, narrowLimit.limitS, 1.25);
  printRow(`the same, its next build`, next!, ATOMS, narrowLimit.limitS, 1.25);
}

if (WIDE_ATOMS > 0) {
  const wideLimit = await measureSpawnLimit(WIDE_ATOMS, 80);
  process.stdout.write(`  ${formatSpawnLimit(wideLimit, WIDE_ATOMS, 80)}\n`);
  const [first, next] = await runOurCluster({ workers: 10, executors: 8, atoms: WIDE_ATOMS, pollIntervalMs: 25, cpuProfileDir: null, builds: 2 });
  printRow(`${WIDE_ATOMS} atoms, 10 workers x 8 executors, a new master's first build`, first!, WIDE_ATOMS, wideLimit.limitS, 1.3);
  printRow(`the same, its next build`, next!, WIDE_ATOMS, wideLimit.limitS, 1.3);
}
if (CPU_PROFILE_DIR) process.stdout.write(`  worker CPU profiles in ${CPU_PROFILE_DIR}\n`);
