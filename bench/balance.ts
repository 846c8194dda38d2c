/**
 * Load balance on a real local cluster (bench/balance-cluster.ts), cold (no timing history) and again with
 * history. Targets (issue 18): develocity, efficiency = serial seconds / (25 × wall), ≥ 97% cold and ≥ 99%
 * with history; skewed, wall ≤ 1.01× the best schedule with history. The best schedule is bounded below by
 * max(longest atom, serial / executors, the E-th + (E+1)-th longest atoms: two of the E+1 longest share an
 * executor); for skewed that bound is 16.0 s, which a schedule reaches.
 *
 * Each run's wall (POST to terminal) is then split, from the master's own records (attempts and the build's
 * state times), into: start (POST → first atom started), the atoms' nominal time, their own extra time
 * (started → finished as the master saw it, past the nominal: the shell and `sleep` starting, and the
 * messages), executors idle inside the run, and end (last atom → terminal: the archive). Idle is split
 * again, each executor placed by the master's lease events: before its first atom, between its atoms (the
 * hand-over), after its last (the tail). Executor-seconds are shown per executor, so the parts add up.
 * BENCH_BALANCE=develocity|skewed runs one case; BENCH_SCALE=0.1 shortens every atom for a quick check.
 */
import Database from 'better-sqlite3';
import { balanceCases, runBalanceBuild, SEED, startBalanceCluster, type BalanceCluster, type Case } from './balance-cluster.ts';

interface Breakdown {
  readonly startS: number;
  readonly extraS: number;
  readonly idleS: number;
  /** The idle part, per executor: before its first atom, between its atoms, after its last one. */
  readonly rampS: number;
  readonly betweenS: number;
  readonly tailS: number;
  readonly endS: number;
  /** Mean per atom, as the worker measured it (spawn → exit), past the nominal duration. */
  readonly workerExtraMs: number;
}

/** A lower bound on any schedule's makespan, reached by the best one in both cases here. */
export function bestScheduleBound(durations: readonly number[], executors: number): number {
  const sorted = [...durations].sort((a, b) => b - a);
  const serial = durations.reduce((sum, seconds) => sum + seconds, 0);
  const pair = sorted.length > executors ? sorted[executors - 1]! + sorted[executors]! : 0;
  return Math.max(sorted[0] ?? 0, serial / executors, pair);
}

function breakdown(cluster: BalanceCluster, buildId: number, wall: number, executors: number, serial: number): Breakdown {
  const db = new Database(cluster.database, { readonly: true, fileMustExist: true });
  try {
    const build = db.prepare('SELECT state_timestamps FROM builds WHERE id = ?').get(buildId) as { state_timestamps: string };
    const queued = (JSON.parse(build.state_timestamps) as Record<string, number>)['queued']!;
    const span = db.prepare('SELECT min(started) AS first, max(finished) AS last, sum(finished - started) AS inside FROM attempts WHERE build_id = ?')
      .get(buildId) as { first: number; last: number; inside: number };
    // The atom's value is `<index>:<seconds>` (balance-cluster.ts): its nominal duration follows the colon.
    const worker = db.prepare("SELECT avg(actual_time - CAST(substr(value, instr(value, ':') + 1) AS REAL)) AS extra FROM atoms WHERE build_id = ?")
      .get(buildId) as { extra: number };
    const startS = span.first - queued;
    const endS = wall - (span.last - queued);
    // Which executor ran each subjob, from the master's lease events (the last one of a subjob ran it).
    const executorOf = new Map<number, string>();
    for (const row of db.prepare("SELECT fields FROM events WHERE build_id = ? AND tag = 'MASTER_TRIGGERED_SUBJOB' ORDER BY id").all(buildId) as { fields: string }[]) {
      const fields = JSON.parse(row.fields) as { subjob_id: number; worker: string; executor: number };
      executorOf.set(fields.subjob_id, `${fields.worker}/${fields.executor}`);
    }
    const runs = new Map<string, { started: number; finished: number }[]>();
    for (const attempt of db.prepare('SELECT subjob_id, started, finished FROM attempts WHERE build_id = ? AND finished IS NOT NULL').all(buildId) as { subjob_id: number; started: number; finished: number }[]) {
      const key = executorOf.get(attempt.subjob_id) ?? '?';
      if (!runs.has(key)) runs.set(key, []);
      runs.get(key)!.push(attempt);
    }
    let ramp = 0;
    let between = 0;
    let tail = 0;
    for (const list of runs.values()) {
      list.sort((a, b) => a.started - b.started);
      ramp += list[0]!.started - span.first;
      for (let index = 1; index < list.length; index++) between += Math.max(0, list[index]!.started - list[index - 1]!.finished);
      tail += span.last - list[list.length - 1]!.finished;
    }
    // Executors that ran nothing were idle for the whole span.
    ramp += (executors - runs.size) * (span.last - span.first);
    return {
      startS, endS,
      extraS: (span.inside - serial) / executors,
      idleS: (executors * (span.last - span.first) - span.inside) / executors,
      rampS: ramp / executors, betweenS: between / executors, tailS: tail / executors,
      workerExtraMs: worker.extra * 1000,
    };
  } finally {
    db.close();
  }
}

async function runCase(kase: Case): Promise<void> {
  const cluster = await startBalanceCluster(kase, 'bench');
  const executors = kase.workers * kase.executorsPerWorker;
  const serial = kase.durations.reduce((sum, seconds) => sum + seconds, 0);
  const best = bestScheduleBound(kase.durations, executors);
  process.stdout.write(`${kase.name}: ${kase.durations.length} atoms, ${serial.toFixed(1)} s serial, ${kase.workers} workers x ${kase.executorsPerWorker} executors, ` +
    `best schedule ${best.toFixed(2)} s, seed ${SEED}\n`);
  try {
    for (const run of ['cold', 'history']) {
      const { wall, buildId, subjobs } = await runBalanceBuild(cluster);
      const efficiency = serial / (executors * wall);
      const parts = breakdown(cluster, buildId, wall, executors, serial);
      const s = (seconds: number) => seconds.toFixed(2);
      process.stdout.write(`  ${run.padEnd(7)} wall ${wall.toFixed(2)} s, ${subjobs} subjobs, efficiency ${(efficiency * 100).toFixed(1)}%, ` +
        `wall / best schedule ${(wall / best).toFixed(3)}\n` +
        `          = start ${s(parts.startS)} + atoms ${s(serial / executors)} + their own extra ${s(parts.extraS)} + idle ${s(parts.idleS)} + end ${s(parts.endS)} s ` +
        `(per executor; the worker measured ${parts.workerExtraMs.toFixed(1)} ms per atom past its sleep)\n` +
        `          idle = before an executor's first atom ${s(parts.rampS)} + between its atoms ${s(parts.betweenS)} + after its last ${s(parts.tailS)} s\n`);
    }
  } finally {
    await cluster.stop();
  }
}

const only = process.env['BENCH_BALANCE'];
for (const kase of balanceCases()) {
  if (only === undefined || only === kase.name) await runCase(kase);
}
