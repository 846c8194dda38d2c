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
import type { MasterServer } from '../master/server.ts';
import { balanceCases, runBalanceBuild, startBalanceCluster, type Case } from './balance-cluster.ts';

async function predict(master: MasterServer, executors: number): Promise<number> {
  const response = await fetch(`${master.url}/v2/jobs/Balance/plan?executors=${executors}`);
  const plan = (await response.json()) as { predicted_seconds: number | null };
  if (plan.predicted_seconds === null) throw new Error('no prediction with history');
  return plan.predicted_seconds;
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
    const predicted = await predict(master, executors);
    const measured = (await runBalanceBuild(cluster)).wall;
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
