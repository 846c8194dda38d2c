/**
 * Load balance on a real local cluster (bench/balance-cluster.ts), cold (no timing history) and again with
 * history. develocity: efficiency = serial seconds / (25 × wall); targets ≥ 90% cold, ≥ 95% with history.
 * skewed: makespan against the lower bound max(longest atom, serial / executors); target with history: within
 * 5%. BENCH_BALANCE=develocity|skewed runs one case; BENCH_SCALE=0.1 shortens every atom for a quick check.
 */
import { balanceCases, runBalanceBuild, SEED, startBalanceCluster, type Case } from './balance-cluster.ts';

async function runCase(kase: Case): Promise<void> {
  const cluster = await startBalanceCluster(kase, 'bench');
  const executors = kase.workers * kase.executorsPerWorker;
  const serial = kase.durations.reduce((sum, seconds) => sum + seconds, 0);
  const lowerBound = Math.max(Math.max(...kase.durations), serial / executors);
  process.stdout.write(`${kase.name}: ${kase.durations.length} atoms, ${serial.toFixed(1)} s serial, ${kase.workers} workers x ${kase.executorsPerWorker} executors, seed ${SEED}\n`);
  try {
    for (const run of ['cold', 'history']) {
      const { wall, subjobs } = await runBalanceBuild(cluster);
      const efficiency = serial / (executors * wall);
      process.stdout.write(`  ${run.padEnd(7)} wall ${wall.toFixed(2)} s, ${subjobs} subjobs, efficiency ${(efficiency * 100).toFixed(1)}%, ` +
        `makespan / lower bound ${(wall / lowerBound).toFixed(3)} (lower bound ${lowerBound.toFixed(2)} s)\n`);
    }
  } finally {
    await cluster.stop();
  }
}

const only = process.env['BENCH_BALANCE'];
for (const kase of balanceCases()) {
  if (only === undefined || only === kase.name) await runCase(kase);
}
