import { setImmediate as nextTurn } from 'node:timers/promises';
import { atomCommandString } from '../../shared/job-config.ts';
import type { Store } from '../store/index.ts';
import { createBuildQuery } from '../store/build-query.ts';

/**
 * What a build costs besides its atoms' own seconds, learned from the job's last builds as the master
 * recorded them (SPEC §15 estimates): the simulation in simulation.ts adds these where the scheduler meets
 * them. A dispatch-only model predicted 40–90 % short on a loaded machine (issue 14): these costs are the rest.
 */
export interface Overheads {
  /** Queued to the first worker setting the build up: fetching the project and atomizing it. */
  readonly prepareS: number;
  /** A worker's setup start to its first subjob leased: the setup itself and the dispatch pass after it. */
  readonly setupS: number;
  /** Per subjob on its executor: the lease going out, its result coming back, and the pass that hands out the next. */
  readonly subjobS: number;
  /** Per atom on its executor, beyond the seconds the worker timed it: its start and result messages and writes. */
  readonly atomS: number;
  /** The last subjob on an executor: its lease to its last result, beyond its atoms (no next dispatch to wait for). */
  readonly lastSubjobS: number;
  /** The last result to the build's end: the artifact archive and the test results settling. */
  readonly archiveS: number;
  /**
   * How long the atoms ran against what the history says of them now (actual / history seconds): the
   * history's average (half the last run, half the runs before) trails a machine that got busier or quieter
   * (a cold build, leasing one atom per subjob, runs its atoms slower than the grouped builds after it).
   */
  readonly atomTimeRatio: number;
}

/** Overheads and how many builds they were learned from (0: DEFAULT_OVERHEADS). */
export interface LearnedOverheads extends Overheads {
  readonly builds: number;
}

/**
 * Without history: the costs bench/plan.ts measured on an idle 2-core machine, dispatch round trip and
 * per-atom writes; preparing, setup and the archive grow with the project and the machine, so a job learns them.
 */
export const DEFAULT_OVERHEADS: Overheads = {
  prepareS: 0, setupS: 0, subjobS: 0.02, atomS: 0.012, lastSubjobS: 0.02, archiveS: 0, atomTimeRatio: 1,
};

/** What one finished build recorded, all times in epoch seconds. */
export interface BuildFacts {
  readonly queuedS: number;
  /** The first worker's setup start (the build's BUILDING stamp). */
  readonly buildingS: number;
  readonly finishedS: number;
  readonly setupStarts: readonly { readonly workerId: number; readonly atS: number }[];
  /** Every lease, from MASTER_TRIGGERED_SUBJOB: the worker's executor it went to. */
  readonly leases: readonly { readonly atS: number; readonly workerId: number; readonly executor: number; readonly subjobId: number }[];
  /** Every attempt; `seconds` is what the worker timed, known for an atom's last attempt only. */
  readonly attempts: readonly {
    readonly subjobId: number; readonly startedS: number; readonly finishedS: number | null; readonly seconds: number | null;
  }[];
  /** Over the build's finished atoms that the job's history knows: what the history says now, and what they took. */
  readonly againstHistory?: { readonly historyS: number; readonly actualS: number };
}

/** Builds of the job learned from, newest first: recent enough to reflect today's machines, a few to smooth one odd run. */
export const MAX_LEARNED_BUILDS = 3;
/** Builds of the job looked at, newest first, for finished ones with atoms. */
const MAX_BUILDS_LOOKED_AT = 50;
/** Rows read per build: past these, a build teaches from its first leases and attempts only. */
const MAX_LEASES_READ = 20_000;
const MAX_ATTEMPTS_READ = 100_000;

/**
 * The overheads one build shows, or null when it shows none (no lease or no timed attempt: nothing ran).
 * Each figure is a mean over what the build did, never below 0; one the build cannot show (no executor
 * took a second subjob, say) is left out and comes from the other builds or the default.
 */
export function learnBuildOverheads(facts: BuildFacts): Partial<Overheads> | null {
  const timed = facts.attempts.filter((attempt) => attempt.finishedS !== null && attempt.seconds !== null);
  if (facts.leases.length === 0 || timed.length === 0) return null;
  const learned: { -readonly [K in keyof Overheads]?: number } = {};
  learned.prepareS = Math.max(0, facts.buildingS - facts.queuedS);
  learned.atomS = mean(timed.map((attempt) => Math.max(0, attempt.finishedS! - attempt.startedS - attempt.seconds!)));
  const atomS = learned.atomS;

  // A loop, not Math.max(...spread): a build's attempts may be more than a call's arguments can be.
  const lastFinished = timed.reduce((last, attempt) => Math.max(last, attempt.finishedS!), -Infinity);
  learned.archiveS = Math.max(0, facts.finishedS - lastFinished);

  const firstLease = new Map<number, number>();
  for (const lease of facts.leases) firstLease.set(lease.workerId, Math.min(firstLease.get(lease.workerId) ?? Infinity, lease.atS));
  const setups = facts.setupStarts.filter((setup) => firstLease.has(setup.workerId))
    .map((setup) => Math.max(0, firstLease.get(setup.workerId)! - setup.atS));
  if (setups.length > 0) learned.setupS = mean(setups);

  // A subjob leased more than once (a retry, a worker lost) mixes runs: it teaches nothing clear, and is left out.
  const leasesOf = new Map<number, number>();
  for (const lease of facts.leases) leasesOf.set(lease.subjobId, (leasesOf.get(lease.subjobId) ?? 0) + 1);
  const work = new Map<number, { seconds: number; atoms: number; isTimed: boolean; lastS: number }>();
  for (const attempt of facts.attempts) {
    const entry = work.get(attempt.subjobId) ?? { seconds: 0, atoms: 0, isTimed: true, lastS: -Infinity };
    entry.seconds += attempt.seconds ?? 0;
    entry.atoms++;
    entry.isTimed &&= attempt.seconds !== null && attempt.finishedS !== null;
    entry.lastS = Math.max(entry.lastS, attempt.finishedS ?? -Infinity);
    work.set(attempt.subjobId, entry);
  }
  // Lanes: each executor's leases in time order. A lease's cycle runs to the next lease on its executor.
  const lanes = new Map<string, (typeof facts.leases)[number][]>();
  for (const lease of facts.leases) {
    const key = `${lease.workerId}/${lease.executor}`;
    const lane = lanes.get(key);
    if (lane === undefined) lanes.set(key, [lease]);
    else lane.push(lease);
  }
  const cycles: number[] = [];
  const lasts: number[] = [];
  for (const lane of lanes.values()) {
    lane.sort((a, b) => a.atS - b.atS);
    lane.forEach((lease, index) => {
      const done = work.get(lease.subjobId);
      if (done === undefined || !done.isTimed || leasesOf.get(lease.subjobId) !== 1) return;
      const own = done.seconds + done.atoms * atomS;
      const next = lane[index + 1];
      if (next !== undefined) cycles.push(Math.max(0, next.atS - lease.atS - own));
      else lasts.push(Math.max(0, done.lastS - lease.atS - own));
    });
  }
  if (cycles.length > 0) learned.subjobS = mean(cycles);
  if (lasts.length > 0) learned.lastSubjobS = mean(lasts);
  const against = facts.againstHistory;
  if (against !== undefined && against.historyS > 0) learned.atomTimeRatio = against.actualS / against.historyS;
  return learned;
}

/**
 * Per figure, the median over the builds that show it (newest first, at most MAX_LEARNED_BUILDS of them
 * counted); the default where none does.
 */
export function combineOverheads(perBuild: readonly Partial<Overheads>[]): LearnedOverheads {
  const builds = perBuild.slice(0, MAX_LEARNED_BUILDS);
  const pick = (key: keyof Overheads): number => {
    const values = builds.map((build) => build[key]).filter((value): value is number => value !== undefined && Number.isFinite(value));
    return values.length === 0 ? DEFAULT_OVERHEADS[key] : median(values);
  };
  return {
    prepareS: pick('prepareS'), setupS: pick('setupS'), subjobS: pick('subjobS'), atomS: pick('atomS'),
    lastSubjobS: pick('lastSubjobS'), archiveS: pick('archiveS'), atomTimeRatio: pick('atomTimeRatio'), builds: builds.length,
  };
}

/** One finished build's lesson, and whether it was planned with history (grouped) or cold (one atom per subjob). */
export interface BuildLesson {
  readonly overheads: Partial<Overheads>;
  readonly isPlannedWithHistory: boolean;
}

/**
 * The lessons a prediction trusts, newest first: those of builds planned with history when there are any.
 * A prediction is always of a build planned with history, and a cold build's costs are another regime: a
 * lease per atom keeps the master busy dispatching (on the Develocity bench its per-subjob cost was 4× a
 * grouped build's), so it teaches only until a build with history has run.
 */
export function trustedLessons(lessons: readonly BuildLesson[]): Partial<Overheads>[] {
  const grouped = lessons.filter((lesson) => lesson.isPlannedWithHistory);
  return (grouped.length > 0 ? grouped : lessons).slice(0, MAX_LEARNED_BUILDS).map((lesson) => lesson.overheads);
}

/**
 * The job's overheads from its newest finished builds with atoms (of the same timing key: the same job in
 * the same repository or directory). A retried build is left out: its stamps and leases span two rounds.
 */
export function jobOverheads(store: Store, jobName: string, timingKey: string): LearnedOverheads {
  return runNow(jobOverheadsSteps(store, jobName, timingKey));
}

/**
 * jobOverheads a piece per turn of the event loop: a build of 10,000 atoms takes 50-80 ms to learn from,
 * which held a status read that long (issue 18). Pieces are the timing history, and each build's queries.
 */
export async function jobOverheadsInTurns(store: Store, jobName: string, timingKey: string): Promise<LearnedOverheads> {
  const steps = jobOverheadsSteps(store, jobName, timingKey);
  for (let step = steps.next(); ; step = steps.next()) {
    if (step.done === true) return step.value;
    await nextTurn();
  }
}

/** Work in pieces: each `yield` is a place where the event loop may turn. */
type Steps<T> = Generator<void, T, void>;

function runNow<T>(steps: Steps<T>): T {
  for (let step = steps.next(); ; step = steps.next()) if (step.done === true) return step.value;
}

function* jobOverheadsSteps(store: Store, jobName: string, timingKey: string): Steps<LearnedOverheads> {
  store.batcher.flush();
  const { ids } = createBuildQuery(store.db).list({ jobName, statuses: ['SUCCESS', 'FAILURE'] },
    { order: 'desc', offset: 0, limit: MAX_BUILDS_LOOKED_AT });
  const withHistory = store.db.prepare<[number], { found: number }>('SELECT 1 AS found FROM atoms WHERE build_id = ? AND expected_time IS NOT NULL LIMIT 1');
  const history = store.timings.loadJob(timingKey);
  yield;
  const lessons: BuildLesson[] = [];
  for (const id of ids) {
    if (lessons.filter((lesson) => lesson.isPlannedWithHistory).length >= MAX_LEARNED_BUILDS) break;
    const facts = yield* buildFactsSteps(store, id, timingKey, history);
    const learned = facts === null ? null : learnBuildOverheads(facts);
    if (learned !== null) lessons.push({ overheads: learned, isPlannedWithHistory: withHistory.get(id) !== undefined });
    if (facts !== null) yield;
  }
  return combineOverheads(trustedLessons(lessons));
}

interface EventRow { tag: string; timestamp: number; fields: string }
interface AttemptRow { subjob_id: number; started: number; finished: number | null; seconds: number | null }

/**
 * The facts of one build of the job, from SQLite, its atoms set against `history` (the job's timing history
 * now); null when it is not a finished, unretried build of the job.
 */
export function readBuildFacts(store: Store, buildId: number, timingKey: string, history: ReadonlyMap<string, number>): BuildFacts | null {
  return runNow(buildFactsSteps(store, buildId, timingKey, history));
}

function* buildFactsSteps(store: Store, buildId: number, timingKey: string, history: ReadonlyMap<string, number>): Steps<BuildFacts | null> {
  const build = store.builds.get(buildId);
  if (build === null || build.job === null || build.job.timingKey !== timingKey || (build.numAtoms ?? 0) === 0) return null;
  const stamps = build.stateTimestamps;
  const queuedS = stamps['queued'];
  const buildingS = stamps['building'];
  const finishedS = stamps['finished'];
  if (queuedS === undefined || buildingS === undefined || finishedS === undefined || stamps['retried'] !== undefined) return null;
  const db = store.db;
  const events = db.prepare<[number, number], EventRow>(
    `SELECT tag, timestamp, fields FROM events WHERE build_id = ? AND tag IN ('BUILD_SETUP_START', 'MASTER_TRIGGERED_SUBJOB')
     ORDER BY id LIMIT ?`,
  ).all(buildId, MAX_LEASES_READ);
  const setupStarts: { workerId: number; atS: number }[] = [];
  const leases: { atS: number; workerId: number; executor: number; subjobId: number }[] = [];
  for (const event of events) {
    const fields = JSON.parse(event.fields) as Record<string, unknown>;
    const workerId = fields['worker_id'];
    if (typeof workerId !== 'number') continue;
    if (event.tag === 'BUILD_SETUP_START') {
      setupStarts.push({ workerId, atS: event.timestamp });
    } else if (typeof fields['executor'] === 'number' && typeof fields['subjob_id'] === 'number') {
      leases.push({ atS: event.timestamp, workerId, executor: fields['executor'], subjobId: fields['subjob_id'] });
    }
  }
  yield;
  // The worker's own time is on the atom, for its last attempt: the one whose number the atom counts.
  const attempts = db.prepare<[number, number], AttemptRow>(
    `SELECT t.subjob_id, t.started, t.finished, CASE WHEN t.attempt = a.attempts THEN a.actual_time END AS seconds
     FROM attempts t JOIN atoms a ON a.build_id = t.build_id AND a.subjob_id = t.subjob_id AND a.id = t.atom_id
     WHERE t.build_id = ? LIMIT ?`,
  ).all(buildId, MAX_ATTEMPTS_READ);
  yield;
  const atoms = db.prepare<[number, number], { variable: string; value: string; actual_time: number }>(
    'SELECT variable, value, actual_time FROM atoms WHERE build_id = ? AND actual_time IS NOT NULL LIMIT ?',
  ).all(buildId, MAX_ATTEMPTS_READ);
  let historyS = 0;
  let actualS = 0;
  for (const atom of atoms) {
    const seconds = history.get(atomCommandString(atom.variable, atom.value));
    if (seconds === undefined) continue;
    historyS += seconds;
    actualS += atom.actual_time;
  }
  return {
    queuedS, buildingS, finishedS, setupStarts, leases,
    ...(historyS > 0 ? { againstHistory: { historyS, actualS } } : {}),
    attempts: attempts.map((row) => ({ subjobId: row.subjob_id, startedS: row.started, finishedS: row.finished, seconds: row.seconds })),
  };
}

function mean(values: readonly number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
