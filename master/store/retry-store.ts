import type { Db } from './database.ts';
import { isRetryMove, type TerminalStatus } from '../model/build-status.ts';
import { IllegalTransitionError } from '../model/illegal-transition.ts';
import { nowSeconds } from './build-store.ts';

export interface AtomRef {
  readonly subjobId: number;
  readonly atomId: number;
}

/**
 * The SQL side of a retry (SPEC §10), in one transaction: the build leaves its terminal status for BUILDING
 * (only from the exact status the caller saw, so two retries cannot both win), its result and archive are
 * gone until it ends again, and the atoms to run again lose their last result (their attempts stay).
 */
export function createRetryStore(db: Db) {
  const reopenBuild = db.prepare(
    `UPDATE builds SET status = 'BUILDING', error_message = NULL, artifacts_ready = 0, completed_subjobs = @completed,
       state_timestamps = json_patch(state_timestamps, @timestamps)
     WHERE id = @id AND status = @from`,
  );
  const resetAtom = db.prepare(
    `UPDATE atoms SET state = 'NOT_STARTED', exit_code = NULL, actual_time = NULL, stop_reason = NULL
     WHERE build_id = ? AND subjob_id = ? AND id = ?`,
  );
  const resetSubjob = db.prepare(`UPDATE subjobs SET state = 'NOT_STARTED' WHERE build_id = ? AND id = ?`);
  const countSubjobs = db.prepare<[number], { count: number }>('SELECT COUNT(*) AS count FROM subjobs WHERE build_id = ?');

  const reopen = db.transaction((buildId: number, from: TerminalStatus, atoms: readonly AtomRef[]) => {
    const subjobs = new Set(atoms.map((atom) => atom.subjobId));
    const completed = countSubjobs.get(buildId)!.count - subjobs.size;
    const at = nowSeconds();
    // json_patch drops keys set to null: the old end's stamps go, `retried` says when it came back.
    const timestamps = { building: at, retried: at, finished: null, [from.toLowerCase()]: null };
    const result = reopenBuild.run({ id: buildId, from, completed, timestamps: JSON.stringify(timestamps) });
    if (result.changes === 0) throw new IllegalTransitionError('build status', 'another status', 'BUILDING', `build ${buildId}`);
    for (const atom of atoms) resetAtom.run(buildId, atom.subjobId, atom.atomId);
    for (const subjobId of subjobs) resetSubjob.run(buildId, subjobId);
  });

  return {
    /** Throws IllegalTransitionError when the build is no longer in `from` (the model checks the move first). */
    reopen(buildId: number, from: TerminalStatus, atoms: readonly AtomRef[]): void {
      if (!isRetryMove(from, 'BUILDING')) throw new IllegalTransitionError('build status', from, 'BUILDING', `build ${buildId}`);
      reopen(buildId, from, atoms);
    },
  };
}

export type RetryStore = ReturnType<typeof createRetryStore>;
