import type { Db } from './database.ts';

/** Why an attempt stopped before its command ended by itself (SPEC §10); null when it did end by itself. */
export const ATTEMPT_STOP_REASONS = ['timeout', 'canceled', 'worker_lost', 'setup_failed'] as const;
export type AttemptStopReason = (typeof ATTEMPT_STOP_REASONS)[number];

export interface AttemptRecord {
  readonly attempt: number;
  readonly worker: string;
  readonly state: 'IN_PROGRESS' | 'COMPLETED';
  readonly exitCode: number | null;
  readonly stopReason: AttemptStopReason | null;
  /** Seconds since the epoch. */
  readonly started: number;
  readonly finished: number | null;
}

interface AttemptRow {
  attempt: number;
  worker: string;
  state: 'IN_PROGRESS' | 'COMPLETED';
  exit_code: number | null;
  stop_reason: AttemptStopReason | null;
  started: number;
  finished: number | null;
}

/** An atom has at most this many attempts listed: automatic retries and manual ones are both bounded far below. */
export const MAX_ATTEMPTS_LISTED = 1000;

/**
 * Every run of an atom (SPEC §10), one row each, in the `attempts` table (migration 3 of database.ts). The
 * atom row keeps its last attempt's result as before; these rows keep the earlier ones, and the atom's
 * `failed_attempts` counts the runs that failed, so `flaky` costs no query per atom.
 */
export function createAttemptStore(db: Db) {
  // A run that never reported its end (its worker was lost, or its lease revoked) ends when the next one starts.
  const closeEarlier = db.prepare(
    `UPDATE attempts SET state = 'COMPLETED', stop_reason = COALESCE(stop_reason, 'worker_lost'), finished = ?
     WHERE build_id = ? AND subjob_id = ? AND atom_id = ? AND attempt < ? AND state = 'IN_PROGRESS'`,
  );
  // INSERT OR REPLACE: a restarted master that lost an unflushed start may see the same attempt start again.
  const insert = db.prepare(
    `INSERT OR REPLACE INTO attempts (build_id, subjob_id, atom_id, attempt, worker, state, started)
     VALUES (?, ?, ?, ?, ?, 'IN_PROGRESS', ?)`,
  );
  const finish = db.prepare(
    `UPDATE attempts SET state = 'COMPLETED', exit_code = ?, stop_reason = ?, finished = ?
     WHERE build_id = ? AND subjob_id = ? AND atom_id = ? AND attempt = ?`,
  );
  const countFailure = db.prepare(
    'UPDATE atoms SET failed_attempts = failed_attempts + 1 WHERE build_id = ? AND subjob_id = ? AND id = ?',
  );
  const closeBuild = db.prepare(
    `UPDATE attempts SET state = 'COMPLETED', stop_reason = COALESCE(stop_reason, ?), finished = ?
     WHERE build_id = ? AND state = 'IN_PROGRESS'`,
  );
  const select = db.prepare<[number, number, number, number], AttemptRow>(
    `SELECT attempt, worker, state, exit_code, stop_reason, started, finished FROM attempts
     WHERE build_id = ? AND subjob_id = ? AND atom_id = ? ORDER BY attempt LIMIT ?`,
  );

  return {
    started(buildId: number, subjobId: number, atomId: number, attempt: number, worker: string, startedS: number): void {
      // A first attempt has none before it: the lookup, on every atom, was for nothing (issue 18).
      if (attempt > 1) closeEarlier.run(startedS, buildId, subjobId, atomId, attempt);
      insert.run(buildId, subjobId, atomId, attempt, worker, startedS);
    },
    finished(buildId: number, subjobId: number, atomId: number, attempt: number,
      result: { exitCode: number; stopReason: AttemptStopReason | null; finishedS: number }): void {
      finish.run(result.exitCode, result.stopReason, result.finishedS, buildId, subjobId, atomId, attempt);
      if (result.exitCode !== 0) countFailure.run(buildId, subjobId, atomId);
    },
    /** The build ended with attempts still open: they stop here, for this reason. */
    closeOpen(buildId: number, stopReason: AttemptStopReason, finishedS: number): void {
      closeBuild.run(stopReason, finishedS, buildId);
    },
    list(buildId: number, subjobId: number, atomId: number): AttemptRecord[] {
      return select.all(buildId, subjobId, atomId, MAX_ATTEMPTS_LISTED).map((row) => ({
        attempt: row.attempt,
        worker: row.worker,
        state: row.state,
        exitCode: row.exit_code,
        stopReason: row.stop_reason,
        started: row.started,
        finished: row.finished,
      }));
    },
  };
}

export type AttemptStore = ReturnType<typeof createAttemptStore>;
