import { isTerminalStatus } from '../../shared/api/statuses.ts';
import type { Store } from '../store/index.ts';
import type { BuildRecord } from '../store/build-store.ts';
import { createBuildQuery } from '../store/build-query.ts';
import { withTestFileEstimates } from '../tests/test-estimates.ts';
import { DEFAULT_OVERHEADS, jobOverheads, jobOverheadsInTurns, type LearnedOverheads } from './overheads.ts';
import { predictBuild, simulateDispatch, type SimulatedSubjob } from './simulation.ts';

/** SPEC §15 estimates: a running build's ETA, and the plan of a build or of a job's next build. */

export interface Plan {
  readonly executors: number;
  /** Request to end; null without timing history for any of the atoms. */
  readonly predicted_seconds: number | null;
  /** Where the predicted seconds go (they add up to it); null with predicted_seconds. */
  readonly phases: {
    /** Request to the first worker setting the build up: fetching the project and atomizing. */
    readonly prepare_seconds: number;
    /** Then to the last result: the workers' setup and the subjobs on the executors. */
    readonly dispatch_seconds: number;
    /** Then to the end: the artifact archive. */
    readonly archive_seconds: number;
  } | null;
  /** What the prediction adds to the atoms' own seconds, learned from the job's last builds (0 builds: defaults). */
  readonly overheads: {
    readonly setup_seconds: number;
    readonly per_subjob_seconds: number;
    readonly per_atom_seconds: number;
    /** How the atoms ran against their history lately (actual / expected seconds): the history's times are scaled by it. */
    readonly atom_time_ratio: number;
    readonly learned_from_builds: number;
  };
}

/** Builds of a job looked at, newest first, for one that was planned (it has atoms). */
const MAX_BUILDS_LOOKED_AT = 50;

/** The build's atoms run again from the start on `executors` executors, with today's history and the job's overheads. */
export function buildPlan(store: Store, build: BuildRecord, executors: number): Plan {
  const job = build.job;
  if (job === null) return { executors, predicted_seconds: null, phases: null, overheads: overheadsShape({ ...DEFAULT_OVERHEADS, builds: 0 }) };
  const overheads = learnedOverheads(store, job.name, job.timingKey, false);
  const atoms = store.atoms.listBuildAtoms(build.id).map((atom) => ({ variable: atom.variable, value: atom.value }));
  const history = withTestFileEstimates(store.db, job.timingKey, atoms, store.timings.loadJob(job.timingKey));
  const prediction = predictBuild(atoms, history, {
    executors, maxExecutors: job.maxExecutors, maxExecutorsPerWorker: job.maxExecutorsPerWorker,
  }, overheads);
  return {
    executors,
    predicted_seconds: prediction === null ? null : round(prediction.seconds),
    phases: prediction === null ? null : {
      prepare_seconds: round(prediction.prepareS), dispatch_seconds: round(prediction.dispatchS), archive_seconds: round(prediction.archiveS),
    },
    overheads: overheadsShape(overheads),
  };
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
 * in queue order, dispatched on the executors it holds now (set up already), then the archive. Null before
 * it runs, once it is terminal, while it holds no executor, and when its atoms have no history.
 */
export function buildEta(store: Store, build: BuildRecord): number | null {
  if (isTerminalStatus(build.status) || build.status !== 'BUILDING' || build.job === null) return null;
  const held = store.leases.listBuild(build.id).length;
  if (held === 0) return null;
  const { known, mean } = store.atoms.expectedTimeStats(build.id);
  if (known === 0 || mean === null) return null;
  const job = build.job;
  const overheads = learnedOverheads(store, job.name, job.timingKey, true);
  // An atom planned without history of its own is taken as the mean of those with it.
  const subjobs: SimulatedSubjob[] = store.atoms.remainingBySubjob(build.id).map((subjob) =>
    ({ id: subjob.subjobId, seconds: (subjob.seconds + subjob.unknown * mean) * overheads.atomTimeRatio, numAtoms: subjob.numAtoms }));
  const dispatchS = simulateDispatch(subjobs, { executors: held, maxExecutors: job.maxExecutors, maxExecutorsPerWorker: null },
    { ...overheads, setupS: 0 });
  return round(dispatchS + overheads.archiveS);
}

function overheadsShape(overheads: LearnedOverheads): Plan['overheads'] {
  return {
    setup_seconds: round(overheads.setupS), per_subjob_seconds: round(overheads.subjobS, 4), per_atom_seconds: round(overheads.atomS, 4),
    atom_time_ratio: round(overheads.atomTimeRatio, 3), learned_from_builds: overheads.builds,
  };
}

/** Jobs whose learned overheads are remembered; past this the memory starts again (only a recomputation is lost). */
const MAX_CACHED_JOBS = 100;
interface CachedOverheads {
  /** The newest finished build of the job when these were learned. */
  newest: number;
  /** Null until first learned. */
  overheads: LearnedOverheads | null;
  /** A relearning under way, a piece per turn (warmJobOverheads). */
  refresh: Promise<void> | null;
}
const overheadCaches = new WeakMap<Store, Map<string, CachedOverheads>>();

function cacheOf(store: Store): Map<string, CachedOverheads> {
  let cache = overheadCaches.get(store);
  if (cache === undefined) {
    cache = new Map();
    overheadCaches.set(store, cache);
  }
  return cache;
}

function cacheKey(jobName: string, timingKey: string): string {
  return `${jobName}\0${timingKey}`;
}

function newestFinished(store: Store, jobName: string): number {
  store.batcher.flush();
  return createBuildQuery(store.db).list({ jobName, statuses: ['SUCCESS', 'FAILURE'] }, { order: 'desc', offset: 0, limit: 1 }).ids[0] ?? 0;
}

function remember(cache: Map<string, CachedOverheads>, key: string, entry: CachedOverheads): void {
  if (!cache.has(key) && cache.size >= MAX_CACHED_JOBS) cache.clear();
  cache.set(key, entry);
}

/**
 * The job's overheads, learned again only once another of its builds has finished: a running build's ETA
 * asks every few seconds, and learning reads the leases and attempts of a few builds. While a relearning runs
 * in the background (warmJobOverheads, started when a build of the job ends) an ETA (mayBeStale) uses what
 * was learned before; a plan, asked for once, learns on the spot.
 */
function learnedOverheads(store: Store, jobName: string, timingKey: string, mayBeStale: boolean): LearnedOverheads {
  const newest = newestFinished(store, jobName);
  const cache = cacheOf(store);
  const key = cacheKey(jobName, timingKey);
  const cached = cache.get(key);
  if (cached?.overheads && (cached.newest === newest || (mayBeStale && cached.refresh !== null))) return cached.overheads;
  const overheads = jobOverheads(store, jobName, timingKey);
  remember(cache, key, { newest, overheads, refresh: cached?.refresh ?? null });
  return overheads;
}

/**
 * Learns the job's overheads again in the background, a piece per turn of the event loop, so that the next
 * ETA of the job finds them ready instead of learning them inside a status read (50-80 ms after a build of
 * 10,000 atoms: issue 18). The build manager calls it when a build of the job ends.
 */
export function warmJobOverheads(store: Store, jobName: string, timingKey: string): Promise<void> {
  const cache = cacheOf(store);
  const key = cacheKey(jobName, timingKey);
  const current = cache.get(key);
  if (current?.refresh) return current.refresh;
  const newest = newestFinished(store, jobName);
  if (current?.overheads && current.newest === newest) return Promise.resolve();
  const refresh: Promise<void> = jobOverheadsInTurns(store, jobName, timingKey).then((overheads) => {
    remember(cache, key, { newest, overheads, refresh: null });
  }).finally(() => {
    const entry = cache.get(key);
    if (entry?.refresh === refresh) entry.refresh = null;
  });
  if (current !== undefined) current.refresh = refresh;
  else remember(cache, key, { newest: 0, overheads: null, refresh });
  return refresh;
}

function round(seconds: number, digits = 2): number {
  const scale = 10 ** digits;
  return Math.round(seconds * scale) / scale;
}
