import { isTerminalStatus } from '../../shared/api/statuses.ts';
import type { Store } from '../store/index.ts';
import type { BuildRecord } from '../store/build-store.ts';
import { createBuildQuery } from '../store/build-query.ts';
import { withTestFileEstimates } from '../tests/test-estimates.ts';
import { predictBuildSeconds, simulateDispatch, type SimulatedSubjob } from './simulation.ts';

/** SPEC §15 estimates: a running build's ETA, and the plan of a build or of a job's next build. */

export interface Plan {
  readonly executors: number;
  /** Null without timing history for any of the atoms. */
  readonly predicted_seconds: number | null;
}

/** Builds of a job looked at, newest first, for one that was planned (it has atoms). */
const MAX_BUILDS_LOOKED_AT = 50;

/** The build's atoms run again from the start on `executors` executors, with today's history. */
export function buildPlan(store: Store, build: BuildRecord, executors: number): Plan {
  const job = build.job;
  if (job === null) return { executors, predicted_seconds: null };
  const atoms = store.atoms.listBuildAtoms(build.id).map((atom) => ({ variable: atom.variable, value: atom.value }));
  const history = withTestFileEstimates(store.db, job.timingKey, atoms, store.timings.loadJob(job.timingKey));
  const seconds = predictBuildSeconds(atoms, history, {
    executors, maxExecutors: job.maxExecutors, maxExecutorsPerWorker: job.maxExecutorsPerWorker,
  });
  return { executors, predicted_seconds: seconds === null ? null : round(seconds) };
}

/**
 * The next build of a job: the atoms of its newest planned build (of that repository, URL or name, when
 * given) with today's history. Null when the job never got as far as atoms.
 */
export function jobPlan(store: Store, jobName: string, repository: string | undefined, executors: number): Plan | null {
  store.batcher.flush();
  const { ids } = createBuildQuery(store.db).list({ jobName, ...(repository === undefined ? {} : { repository }) },
    { order: 'desc', offset: 0, limit: MAX_BUILDS_LOOKED_AT });
  for (const id of ids) {
    const build = store.builds.get(id);
    if (build !== null && build.job !== null && (build.numAtoms ?? 0) > 0) return buildPlan(store, build, executors);
  }
  return null;
}

/**
 * Seconds until a running build ends: its unfinished subjobs (with their atoms' planned expected times),
 * in queue order, dispatched on the executors it holds now. Null before it runs, once it is terminal,
 * while it holds no executor, and when its atoms have no history.
 */
export function buildEta(store: Store, build: BuildRecord): number | null {
  if (isTerminalStatus(build.status) || build.status !== 'BUILDING' || build.job === null) return null;
  const held = store.leases.listBuild(build.id).length;
  if (held === 0) return null;
  const remaining = new Map<number, { seconds: number; numAtoms: number; unknown: number }>();
  const known: number[] = [];
  for (const atom of store.atoms.listBuildAtoms(build.id)) {
    if (atom.expectedTime !== null) known.push(atom.expectedTime);
    if (atom.state === 'COMPLETED') continue;
    const subjob = remaining.get(atom.subjobId) ?? { seconds: 0, numAtoms: 0, unknown: 0 };
    if (atom.expectedTime === null) subjob.unknown++;
    else subjob.seconds += atom.expectedTime;
    subjob.numAtoms++;
    remaining.set(atom.subjobId, subjob);
  }
  if (known.length === 0) return null;
  // An atom planned without history of its own is taken as the mean of those with it.
  const mean = known.reduce((sum, seconds) => sum + seconds, 0) / known.length;
  const subjobs: SimulatedSubjob[] = [...remaining].sort(([a], [b]) => a - b)
    .map(([id, subjob]) => ({ id, seconds: subjob.seconds + subjob.unknown * mean, numAtoms: subjob.numAtoms }));
  const job = build.job;
  return round(simulateDispatch(subjobs, { executors: held, maxExecutors: job.maxExecutors, maxExecutorsPerWorker: null }));
}

function round(seconds: number): number {
  return Math.round(seconds * 100) / 100;
}
