import { checkTransition, type TransitionTable } from './illegal-transition.ts';

/**
 * The build's lifecycle (SPEC §5). QUEUED: accepted. PREPARING: fetching, reading the job, atomizing, and
 * waiting for the first worker. BUILDING: a worker has been assigned. The last four are terminal: their one
 * way out is a retry (SPEC §10), back to BUILDING.
 */
export const BUILD_STATUSES = ['QUEUED', 'PREPARING', 'BUILDING', 'SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];
export const TERMINAL_STATUSES = ['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'] as const satisfies readonly BuildStatus[];
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

/** The one table of legal status moves; the store enforces the same table in SQL (build-store.ts). */
export const BUILD_STATUS_MOVES: TransitionTable<BuildStatus> = {
  QUEUED: ['PREPARING', 'CANCELED', 'ERROR'],
  // SUCCESS straight from PREPARING: a job with zero atoms has nothing to build.
  PREPARING: ['BUILDING', 'SUCCESS', 'CANCELED', 'ERROR'],
  BUILDING: ['SUCCESS', 'FAILURE', 'CANCELED', 'ERROR'],
  // The retry edge (SPEC §10): only builds/retry.ts takes it, through BuildStore.reopenForRetry, which
  // checks the exact status it leaves; every other writer's SQL guard leaves it out (statusesMovingTo).
  SUCCESS: ['BUILDING'],
  FAILURE: ['BUILDING'],
  ERROR: ['BUILDING'],
  CANCELED: ['BUILDING'],
};

export function canMove(from: BuildStatus, to: BuildStatus): boolean {
  return BUILD_STATUS_MOVES[from].includes(to);
}

/** The status a build moves to; throws IllegalTransitionError when the table does not allow it. */
export function transitionBuildStatus(buildId: number, from: BuildStatus, to: BuildStatus): BuildStatus {
  return checkTransition('build status', BUILD_STATUS_MOVES, from, to, `build ${buildId}`);
}

/** A terminal build going back to BUILDING: a retry of some of its atoms (SPEC §10). */
export function isRetryMove(from: BuildStatus, to: BuildStatus): boolean {
  return isTerminal(from) && to === 'BUILDING' && canMove(from, to);
}

/**
 * The statuses a build may be in to move to `to` (the SQL guard's `status IN (...)`), without the retry
 * edge: a late writer that believes a finished build is still running must never reopen it.
 */
export function statusesMovingTo(to: BuildStatus): BuildStatus[] {
  return BUILD_STATUSES.filter((from) => canMove(from, to) && !isRetryMove(from, to));
}

export function isTerminal(status: BuildStatus): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly BuildStatus[]).includes(status);
}

export const ATOM_STATES = ['NOT_STARTED', 'IN_PROGRESS', 'COMPLETED'] as const;
export type AtomState = (typeof ATOM_STATES)[number];

/** SPEC §2.1: `"{done} of {total} subjobs are complete ({pct with one decimal}%)."`, null with no subjobs. */
export function buildDetails(completedSubjobs: number, totalSubjobs: number): string | null {
  if (totalSubjobs === 0) return null;
  const percent = ((completedSubjobs / totalSubjobs) * 100).toFixed(1);
  return `${completedSubjobs} of ${totalSubjobs} subjobs are complete (${percent}%).`;
}
