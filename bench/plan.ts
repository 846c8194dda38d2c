/**
 * Estimates against reality (SPEC §15): on a real local cluster, a cold build gives the job its history;
 * then `GET /v2/jobs/Balance/plan?executors=N` predicts the next build, which runs and is timed from POST to
 * terminal. The same two cases as bench/balance.ts:
 *   develocity: 1000 atoms of 0.5–1.5 s (seeded uniform) on 5 workers × 5 executors;
 *   skewed: 190 atoms of 0.2 s then 15 of 8 s on 2 workers × 5 executors.
 * The plan predicts request to end: preparing, setup, dispatch and archive, with the overheads the master
 * learned from the cold build (master/estimates/overheads.ts); it prints where the seconds go.
 * Target: predicted within 5% of measured. Also printed: the plan for other executor counts (what the
 * question "how many executors for 5 minutes" reads). BENCH_PLAN=develocity|skewed runs one case;
 * BENCH_SCALE=0.1 shortens every atom for a quick check.
 */
import { loadavg } from 'node:os';
import type { MasterServer } from '../master/server.ts';
import { balanceCases, runBalanceBuild, startBalanceCluster, type Case } from './balance-cluster.ts';

interface PlanAnswer {
  predicted_seconds: number | null;
  phases: { prepare_seconds: number; dispatch_seconds: number; archive_seconds: number } | null;
  overheads: { setup_seconds: number; per_subjob_seconds: number; per_atom_seconds: number; learned_from_builds: number };
}

async function plan(master: MasterServer, executors: number): Promise<PlanAnswer> {
  const response = await fetch(`${master.url}/v2/jobs/Balance/plan?executors=${executors}`);
  const answer = (await response.json()) as PlanAnswer;
  if (answer.predicted_seconds === null) throw new Error('no prediction with history');
  return answer;
}

async function predict(master: MasterServer, executors: number): Promise<number> {
  return (await plan(master, executors)).predicted_seconds!;
}

async function runCase(kase: Case): Promise<number> {
  const cluster = await startBalanceCluster(kase, 'plan');
  const { master } = cluster;
  const executors = kase.workers * kase.executorsPerWorker;
  const serial = kase.durations.reduce((sum, seconds) => sum + seconds, 0);
  process.stdout.write(`${kase.name}: ${kase.durations.length} atoms, ${serial.toFixed(1)} s serial, ${kase.workers} workers x ${kase.executorsPerWorker} executors\n`);
  try {
    const cold = (await runBalanceBuild(cluster)).wall;
    process.stdout.write(`  cold build (gives the history) ${cold.toFixed(2)} s\n`);
    const others = [1, Math.max(1, executors >> 1), executors * 2].map(async (count) => `${count}: ${(await predict(master, count)).toFixed(1)} s`);
    process.stdout.write(`  plan for other executor counts: ${(await Promise.all(others)).join(', ')}\n`);
    const answer = await plan(master, executors);
    const predicted = answer.predicted_seconds!;
    const { phases, overheads } = answer;
    process.stdout.write(`  plan: prepare ${phases!.prepare_seconds} s, dispatch ${phases!.dispatch_seconds} s, archive ${phases!.archive_seconds} s; ` +
      `learned from ${overheads.learned_from_builds} build(s): setup ${overheads.setup_seconds} s, per subjob ${overheads.per_subjob_seconds} s, per atom ${overheads.per_atom_seconds} s\n`);
    const measured = (await runBalanceBuild(cluster)).wall;
    process.stdout.write(`  load average ${loadavg().map((load) => load.toFixed(1)).join(' ')}\n`);
    const error = (predicted - measured) / measured;
    process.stdout.write(`  with history: predicted ${predicted.toFixed(2)} s, measured ${measured.toFixed(2)} s, error ${(error * 100).toFixed(1)}%\n`);
    return error;
  } finally {
    await cluster.stop();
  }
}

const only = process.env['BENCH_PLAN'];
const errors: string[] = [];
for (const kase of balanceCases()) {
  if (only === undefined || only === kase.name) errors.push(`${kase.name} ${((await runCase(kase)) * 100).toFixed(1)}%`);
}
process.stdout.write(`plan error (predicted - measured) / measured: ${errors.join(', ')}; target within ±5%\n`);
