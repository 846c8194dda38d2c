import type { Db } from './database.ts';
import type { AtomState } from '../model/build-status.ts';
import type { StopReason } from '../../shared/process.ts';

/** A subjob's atoms not yet finished, as the ETA needs them. */
export interface RemainingSubjob {
  readonly subjobId: number;
  /** Expected seconds of those planned with history. */
  readonly seconds: number;
  readonly numAtoms: number;
  /** Those planned without history. */
  readonly unknown: number;
}

export interface AtomRecord {
  readonly buildId: number;
  readonly subjobId: number;
  readonly id: number;
  readonly variable: string;
  readonly value: string;
  readonly state: AtomState;
  readonly exitCode: number | null;
  readonly expectedTime: number | null;
  readonly actualTime: number | null;
  readonly attempts: number;
  readonly worker: string | null;
  readonly stopReason: StopReason | null;
  /** Runs of the atom that failed (SPEC §10: with a passing last run, the atom is flaky). */
  readonly failedAttempts: number;
}

export interface SubjobRecord {
  readonly buildId: number;
  readonly id: number;
  readonly state: AtomState;
  readonly worker: string | null;
}

/** What preparation hands over: subjobs in order, each with its atoms in order. */
export interface PlannedSubjob {
  readonly id: number;
  readonly atoms: readonly { readonly id: number; readonly variable: string; readonly value: string; readonly expectedTime: number | null }[];
}

interface AtomRow {
  build_id: number;
  subjob_id: number;
  id: number;
  variable: string;
  value: string;
  state: AtomState;
  exit_code: number | null;
  expected_time: number | null;
  actual_time: number | null;
  attempts: number;
  worker: string | null;
  stop_reason: StopReason | null;
  failed_attempts: number;
}

interface SubjobRow {
  build_id: number;
  id: number;
  state: AtomState;
  worker: string | null;
}

function toAtom(row: AtomRow): AtomRecord {
  return {
    buildId: row.build_id,
    subjobId: row.subjob_id,
    id: row.id,
    variable: row.variable,
    value: row.value,
    state: row.state,
    exitCode: row.exit_code,
    expectedTime: row.expected_time,
    actualTime: row.actual_time,
    attempts: row.attempts,
    worker: row.worker,
    stopReason: row.stop_reason,
    failedAttempts: row.failed_attempts,
  };
}

function toSubjob(row: SubjobRow): SubjobRecord {
  return { buildId: row.build_id, id: row.id, state: row.state, worker: row.worker };
}

/** Rows per INSERT when a plan is written: one statement per row made 100,000 atoms take seconds (issue 18). */
const PLAN_ROWS_PER_INSERT = 200;

export function createAtomStore(db: Db) {
  const insertSubjobs = (rows: number) => db.prepare(
    `INSERT INTO subjobs (build_id, id, state) VALUES ${Array.from({ length: rows }, () => "(?, ?, 'NOT_STARTED')").join(', ')}`,
  );
  const insertAtoms = (rows: number) => db.prepare(
    `INSERT INTO atoms (build_id, subjob_id, id, variable, value, state, expected_time)
     VALUES ${Array.from({ length: rows }, () => "(?, ?, ?, ?, ?, 'NOT_STARTED', ?)").join(', ')}`,
  );
  const insertFullSubjobs = insertSubjobs(PLAN_ROWS_PER_INSERT);
  const insertFullAtoms = insertAtoms(PLAN_ROWS_PER_INSERT);
  const selectSubjobs = db.prepare<[number], SubjobRow>('SELECT * FROM subjobs WHERE build_id = ? ORDER BY id');
  const selectSubjob = db.prepare<[number, number], SubjobRow>('SELECT * FROM subjobs WHERE build_id = ? AND id = ?');
  const selectSubjobsPage = db.prepare<[number, number, number], SubjobRow>('SELECT * FROM subjobs WHERE build_id = ? ORDER BY id LIMIT ? OFFSET ?');
  const selectSubjobRangeAtoms = db.prepare<[number, number, number], AtomRow>(
    'SELECT * FROM atoms WHERE build_id = ? AND subjob_id BETWEEN ? AND ? ORDER BY subjob_id, id',
  );
  const selectBuildAtoms = db.prepare<[number], AtomRow>('SELECT * FROM atoms WHERE build_id = ? ORDER BY subjob_id, id');
  const selectBuildAtomsAfter = db.prepare<[number, number, number, number], AtomRow>(
    'SELECT * FROM atoms WHERE build_id = ? AND (subjob_id, id) > (?, ?) ORDER BY subjob_id, id LIMIT ?',
  );
  const selectSubjobAtoms = db.prepare<[number, number], AtomRow>(
    'SELECT * FROM atoms WHERE build_id = ? AND subjob_id = ? ORDER BY id',
  );
  const selectAtom = db.prepare<[number, number, number], AtomRow>(
    'SELECT * FROM atoms WHERE build_id = ? AND subjob_id = ? AND id = ?',
  );
  const selectInProgress = db.prepare<[number], AtomRow>("SELECT * FROM atoms WHERE build_id = ? AND state = 'IN_PROGRESS' ORDER BY subjob_id, id");
  const selectFailed = db.prepare<[number], AtomRow>(
    'SELECT * FROM atoms WHERE build_id = ? AND exit_code IS NOT NULL AND exit_code != 0 ORDER BY subjob_id, id',
  );
  const updateAtomStarted = db.prepare(
    `UPDATE atoms SET state = 'IN_PROGRESS', worker = ?, attempts = attempts + 1, exit_code = NULL, actual_time = NULL,
       stop_reason = NULL WHERE build_id = ? AND subjob_id = ? AND id = ?`,
  );
  const updateAtomFinished = db.prepare(
    `UPDATE atoms SET state = 'COMPLETED', exit_code = ?, actual_time = ?, stop_reason = ?
     WHERE build_id = ? AND subjob_id = ? AND id = ?`,
  );
  const updateAtomReset = db.prepare(
    `UPDATE atoms SET state = 'NOT_STARTED', exit_code = NULL, actual_time = NULL
     WHERE build_id = ? AND subjob_id = ? AND id = ? AND state != 'COMPLETED'`,
  );
  const updateAtomRetry = db.prepare(
    `UPDATE atoms SET state = 'NOT_STARTED' WHERE build_id = ? AND subjob_id = ? AND id = ?`,
  );
  const updateSubjob = db.prepare('UPDATE subjobs SET state = ?, worker = COALESCE(?, worker) WHERE build_id = ? AND id = ?');
  // The ETA of a running build asks every few seconds: sums in SQLite, not 10,000 atom objects (issue 18).
  const selectRemainingBySubjob = db.prepare<[number], RemainingSubjob>(
    `SELECT subjob_id AS subjobId, total(expected_time) AS seconds, count(*) AS numAtoms, count(*) - count(expected_time) AS unknown
     FROM atoms WHERE build_id = ? AND state != 'COMPLETED' GROUP BY subjob_id ORDER BY subjob_id`,
  );
  const selectExpectedStats = db.prepare<[number], { known: number; mean: number | null }>(
    'SELECT count(expected_time) AS known, avg(expected_time) AS mean FROM atoms WHERE build_id = ?',
  );
  const selectHasExpected = db.prepare<[number], { found: number }>(
    'SELECT EXISTS (SELECT 1 FROM atoms WHERE build_id = ? AND expected_time IS NOT NULL) AS found',
  );
  const resetInProgress = db.prepare(
    `UPDATE atoms SET state = 'NOT_STARTED' WHERE build_id = ? AND state = 'IN_PROGRESS'`,
  );

  return {
    /** Subjob rows first (the atoms' foreign key needs them), PLAN_ROWS_PER_INSERT rows per statement. */
    insertPlan(buildId: number, subjobs: readonly PlannedSubjob[]): void {
      const values: unknown[] = [];
      let rows = 0;
      const flush = (full: ReturnType<typeof insertSubjobs>, partial: (rows: number) => ReturnType<typeof insertSubjobs>) => {
        if (rows === 0) return;
        (rows === PLAN_ROWS_PER_INSERT ? full : partial(rows)).run(values);
        values.length = 0;
        rows = 0;
      };
      for (const subjob of subjobs) {
        values.push(buildId, subjob.id);
        if (++rows === PLAN_ROWS_PER_INSERT) flush(insertFullSubjobs, insertSubjobs);
      }
      flush(insertFullSubjobs, insertSubjobs);
      for (const subjob of subjobs) {
        for (const atom of subjob.atoms) {
          values.push(buildId, subjob.id, atom.id, atom.variable, atom.value, atom.expectedTime);
          if (++rows === PLAN_ROWS_PER_INSERT) flush(insertFullAtoms, insertAtoms);
        }
      }
      flush(insertFullAtoms, insertAtoms);
    },
    listSubjobs(buildId: number): SubjobRecord[] {
      return selectSubjobs.all(buildId).map(toSubjob);
    },
    /** A page of the build's subjobs in id order, read as a page: a build may have 100,000. */
    listSubjobsPage(buildId: number, offset: number, limit: number): SubjobRecord[] {
      return selectSubjobsPage.all(buildId, limit, offset).map(toSubjob);
    },
    /** The atoms of the subjobs fromId…toId, in (subjob, atom) order: one read for a page of subjobs. */
    listSubjobRangeAtoms(buildId: number, fromId: number, toId: number): AtomRecord[] {
      return selectSubjobRangeAtoms.all(buildId, fromId, toId).map(toAtom);
    },
    getSubjob(buildId: number, subjobId: number): SubjobRecord | null {
      const row = selectSubjob.get(buildId, subjobId);
      return row ? toSubjob(row) : null;
    },
    listBuildAtoms(buildId: number): AtomRecord[] {
      return selectBuildAtoms.all(buildId).map(toAtom);
    },
    /** listBuildAtoms a page at a time: at most `limit` atoms after (subjobId, atomId), or from the first. */
    listBuildAtomsAfter(buildId: number, after: { subjobId: number; atomId: number } | null, limit: number): AtomRecord[] {
      return selectBuildAtomsAfter.all(buildId, after?.subjobId ?? -1, after?.atomId ?? -1, limit).map(toAtom);
    },
    listSubjobAtoms(buildId: number, subjobId: number): AtomRecord[] {
      return selectSubjobAtoms.all(buildId, subjobId).map(toAtom);
    },
    getAtom(buildId: number, subjobId: number, atomId: number): AtomRecord | null {
      const row = selectAtom.get(buildId, subjobId, atomId);
      return row ? toAtom(row) : null;
    },
    /** Per subjob with atoms still to finish: their expected seconds (planned with history), how many, how many without. */
    remainingBySubjob(buildId: number): RemainingSubjob[] {
      return selectRemainingBySubjob.all(buildId);
    },
    /** How many of the build's atoms were planned with an expected time, and their mean (null when none). */
    expectedTimeStats(buildId: number): { known: number; mean: number | null } {
      return selectExpectedStats.get(buildId)!;
    },
    /** Whether any atom was planned with an expected time (they are set once, when the build is planned). */
    hasExpectedTimes(buildId: number): boolean {
      return selectHasExpected.get(buildId)!.found === 1;
    },
    /** The atoms running now, without reading the whole build into objects. */
    listInProgressAtoms(buildId: number): AtomRecord[] {
      return selectInProgress.all(buildId).map(toAtom);
    },
    listFailedAtoms(buildId: number): AtomRecord[] {
      return selectFailed.all(buildId).map(toAtom);
    },
    markStarted(buildId: number, subjobId: number, atomId: number, worker: string): void {
      updateAtomStarted.run(worker, buildId, subjobId, atomId);
    },
    markFinished(buildId: number, subjobId: number, atomId: number, exitCode: number, actualTime: number, stopReason: StopReason | null): void {
      updateAtomFinished.run(exitCode, actualTime, stopReason, buildId, subjobId, atomId);
    },
    /** Back to NOT_STARTED after a lost lease; a completed atom keeps its one result. */
    markRequeued(buildId: number, subjobId: number, atomId: number): void {
      updateAtomReset.run(buildId, subjobId, atomId);
    },
    /** A failed atom that will run again keeps its last exit code visible until the retry starts. */
    markRetrying(buildId: number, subjobId: number, atomId: number): void {
      updateAtomRetry.run(buildId, subjobId, atomId);
    },
    setSubjobState(buildId: number, subjobId: number, state: AtomState, worker: string | null = null): void {
      updateSubjob.run(state, worker, buildId, subjobId);
    },
    /** After a master restart nothing is running any more. */
    resetInProgress(buildId: number): void {
      resetInProgress.run(buildId);
    },
  };
}

export type AtomStore = ReturnType<typeof createAtomStore>;
