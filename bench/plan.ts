/**
 * Estimates against reality (SPEC §15): on a real local cluster, a cold build gives the job its history;
 * then `GET /v2/jobs/Balance/plan?executors=N` predicts the next build, which runs and is timed from POST to
 * terminal. The same two cases as bench/balance.ts:
 *   develocity: 1000 atoms of 0.5–1.5 s (seeded uniform) on 5 workers × 5 executors;
 *   skewed: 190 atoms of 0.2 s then 15 of 8 s on 2 workers × 5 executors.
 * The plan predicts request to end: preparing, setup, dispatch and archive, with the overheads the master
 * learns from the job's builds (master/estimates/overheads.ts); it prints where the seconds go. Two
 * predictions: the second build's from the cold build alone, the third's from a build planned with history.
 * Target: predicted within 5% of measured. Also printed: the plan for other executor counts (what the
 * question "how many executors for 5 minutes" reads). BENCH_PLAN=develocity|skewed runs one case;
 * BENCH_SCALE=0.1 shortens every atom for a quick check.
 */
import { loadavg } from 'node:os';
import type { MasterServer } from '../master/server.ts';
import { learnBuildOverheads, readBuildFacts } from '../master/estimates/overheads.ts';
import { balanceCases, runBalanceBuild, startBalanceCluster, type BalanceCluster, type Case } from './balance-cluster.ts';

interface PlanAnswer {
  predicted_seconds: number | null;
  phases: { prepare_seconds: number; dispatch_seconds: number; archive_seconds: number } | null;
  overheads: { setup_seconds: number; per_subjob_seconds: number; per_atom_seconds: number; atom_time_ratio: number; learned_from_builds: number };
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

function newestBuildId(master: MasterServer): number {
  master.store.batcher.flush();
  return (master.store.db.prepare('SELECT max(id) AS id FROM builds').get() as { id: number }).id;
}

/** The newest build's phases and overheads as the master recorded them, to set beside the plan's. */
function measuredPhases(master: MasterServer, historyBefore: ReadonlyMap<string, number>): string {
  const { store } = master;
  const id = newestBuildId(master);
  const build = store.builds.get(id)!;
  // Set against the history as it was before the build's own times went in: the ratio the plan used.
  const facts = readBuildFacts(store, id, build.job!.timingKey, historyBefore);
  const learned = facts === null ? null : learnBuildOverheads(facts);
  if (facts === null || learned === null) return 'nothing recorded';
  const { retried } = store.db.prepare('SELECT count(*) AS retried FROM atoms WHERE build_id = ? AND failed_attempts > 0').get(id) as { retried: number };
  const lastResult = Math.max(...facts.attempts.map((attempt) => attempt.finishedS ?? 0));
  const fixed = (value: number | undefined) => (value === undefined ? 'n/a' : value.toFixed(3));
  const ratio = facts.againstHistory === undefined ? 'n/a' : (facts.againstHistory.actualS / facts.againstHistory.historyS).toFixed(3);
  return `prepare ${(facts.buildingS - facts.queuedS).toFixed(2)} s, dispatch ${(lastResult - facts.buildingS).toFixed(2)} s, ` +
    `archive ${(facts.finishedS - lastResult).toFixed(2)} s; ${build.numSubjobs} subjobs; setup ${fixed(learned.setupS)} s, ` +
    `per subjob ${fixed(learned.subjobS)} s, per atom ${fixed(learned.atomS)} s, last subjob ${fixed(learned.lastSubjobS)} s, atom time ratio ${ratio}; ${retried} atoms retried`;
}

/** Plans the next build on all the case's executors, runs it, and prints both; returns the error. */
async function predictAndRun(cluster: BalanceCluster, executors: number, label: string): Promise<number> {
  const { master } = cluster;
  const answer = await plan(master, executors);
  const predicted = answer.predicted_seconds!;
  const { phases, overheads } = answer;
  process.stdout.write(`  ${label}\n    plan: prepare ${phases!.prepare_seconds} s, dispatch ${phases!.dispatch_seconds} s, archive ${phases!.archive_seconds} s; ` +
    `learned from ${overheads.learned_from_builds} build(s): setup ${overheads.setup_seconds} s, per subjob ${overheads.per_subjob_seconds} s, per atom ${overheads.per_atom_seconds} s, atom time ratio ${overheads.atom_time_ratio}\n`);
  const { timingKey } = master.store.builds.get(newestBuildId(master))!.job!;
  const historyBefore = master.store.timings.loadJob(timingKey);
  const measured = (await runBalanceBuild(cluster)).wall;
  process.stdout.write(`    measured: ${measuredPhases(master, historyBefore)}; load average ${loadavg().map((load) => load.toFixed(1)).join(' ')}\n`);
  const error = (predicted - measured) / measured;
  process.stdout.write(`    predicted ${predicted.toFixed(2)} s, measured ${measured.toFixed(2)} s, error ${(error * 100).toFixed(1)}%\n`);
  return error;
}

/**
 * The cold build gives the history; the next build is predicted from it alone (its costs are those of a
 * lease per atom), then the one after from a build planned with history, as a job that runs regularly has.
 */
async function runCase(kase: Case): Promise<{ fromCold: number; withHistory: number }> {
  // Retries: an atom that could not start (a worker-side failure) runs again rather than end the bench; the
  // measured line says how many did.
  const cluster = await startBalanceCluster(kase, 'plan', { retries: 2 });
  const { master } = cluster;
  const executors = kase.workers * kase.executorsPerWorker;
  const serial = kase.durations.reduce((sum, seconds) => sum + seconds, 0);
  process.stdout.write(`${kase.name}: ${kase.durations.length} atoms, ${serial.toFixed(1)} s serial, ${kase.workers} workers x ${kase.executorsPerWorker} executors\n`);
  try {
    const cold = (await runBalanceBuild(cluster)).wall;
    process.stdout.write(`  cold build (gives the history) ${cold.toFixed(2)} s\n`);
    const others = [1, Math.max(1, executors >> 1), executors * 2].map(async (count) => `${count}: ${(await predict(master, count)).toFixed(1)} s`);
    process.stdout.write(`  plan for other executor counts: ${(await Promise.all(others)).join(', ')}\n`);
    const fromCold = await predictAndRun(cluster, executors, 'second build, planned from the cold build alone:');
    const withHistory = await predictAndRun(cluster, executors, 'third build, planned from a build with history:');
    return { fromCold, withHistory };
  } finally {
    await cluster.stop();
  }
}

const only = process.env['BENCH_PLAN'];
const errors: string[] = [];
const percent = (error: number) => `${(error * 100).toFixed(1)}%`;
for (const kase of balanceCases()) {
  if (only !== undefined && only !== kase.name) continue;
  const { fromCold, withHistory } = await runCase(kase);
  errors.push(`${kase.name} ${percent(withHistory)} (from the cold build alone ${percent(fromCold)})`);
}
process.stdout.write(`plan error (predicted - measured) / measured: ${errors.join(', ')}; target within ±5%\n`);
