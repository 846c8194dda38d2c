import type { Logger } from '../../shared/log.ts';
import type { Store } from '../store/index.ts';
import { BuildRun } from './build-run.ts';
import type { BuildRequest } from './build-request.ts';
import type { LeaseBook } from './lease-book.ts';

/**
 * How long a restarted master keeps the leases of the work that was running, for their workers to come back
 * and resume them. Workers retry with backoff capped at 5 s (worker/connection.ts), so most are back within
 * a few seconds; on a loaded machine a master's start and a worker's reconnection can each take several
 * more (a 15 s window let atoms of a worker that came back late run twice). After this the work runs again
 * elsewhere.
 */
const RESTART_RESUME_MS = 30_000;

/** What a restarted master does with each unfinished build it finds. */
export interface RecoveredBuilds {
  /** Not prepared yet: prepare again. */
  readonly toPrepare: BuildRun[];
  /** Prepared, with atoms left: ready for workers. */
  readonly toRun: BuildRun[];
  /** Prepared, every atom has its result: finish it. */
  readonly toFinish: BuildRun[];
}

/**
 * Restart recovery (crash-only: SQLite is all there is). Rebuilds the live run of every unfinished build:
 * done atoms stay done, atoms of the leases that were live wait for their worker (lease-book.ts keeps them
 * as orphans for RESTART_RESUME_MS), the rest queue again.
 */
export function recoverBuilds(deps: { store: Store; log: Logger; leases: LeaseBook }): RecoveredBuilds {
  const recovered: RecoveredBuilds = { toPrepare: [], toRun: [], toFinish: [] };
  for (const record of deps.store.builds.listUnfinished()) {
    const run = new BuildRun(record.id, record.priority, record.request as BuildRequest);
    run.status = record.status;
    if (record.job === null || record.projectDir === null) {
      recovered.toPrepare.push(run);
      continue;
    }
    run.job = record.job;
    run.projectDir = record.projectDir;
    loadPlan(deps.store, run, deps.leases.holdOrphans(run));
    deps.log.info({ buildId: run.id, remainingAtoms: run.remainingAtoms }, 'resuming build after restart');
    (run.remainingAtoms === 0 ? recovered.toFinish : recovered.toRun).push(run);
  }
  return recovered;
}

/** Gives the workers of the orphan leases time to come back, then runs their atoms again. */
export function startOrphanTimer(deps: { log: Logger; leases: LeaseBook; released: () => void }): NodeJS.Timeout | null {
  if (deps.leases.orphanCount === 0) return null;
  deps.log.info({ leases: deps.leases.orphanCount, waitMs: RESTART_RESUME_MS }, 'keeping the leases that were running for their workers to resume');
  const timer = setTimeout(() => {
    deps.leases.releaseOrphans();
    deps.released();
  }, RESTART_RESUME_MS);
  timer.unref();
  return timer;
}

/** A restarted master's view of a build: done atoms stay done, held ones wait for their worker, the rest queue. */
function loadPlan(store: Store, run: BuildRun, held: ReadonlySet<string>): void {
  const bySubjob = new Map<number, { id: number; atoms: { id: number; variable: string; value: string; isComplete: boolean; isHeld: boolean }[] }>();
  const atoms = store.atoms.listBuildAtoms(run.id);
  const requeued: { subjobId: number; id: number }[] = [];
  for (const atom of atoms) {
    let subjob = bySubjob.get(atom.subjobId);
    if (!subjob) bySubjob.set(atom.subjobId, (subjob = { id: atom.subjobId, atoms: [] }));
    const isHeld = held.has(`${atom.subjobId}/${atom.id}`);
    if (atom.state === 'IN_PROGRESS' && !isHeld) requeued.push(atom);
    subjob.atoms.push({ id: atom.id, variable: atom.variable, value: atom.value, isComplete: atom.state === 'COMPLETED', isHeld });
  }
  store.batcher.add(() => {
    for (const atom of requeued) store.atoms.markRequeued(run.id, atom.subjobId, atom.id);
  }, run.id);
  run.load([...bySubjob.values()]);
  for (const atom of atoms) run.restoreAttempts(atom.subjobId, atom.id, atom.attempts);
}
