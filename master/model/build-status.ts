import { checkTransition, type TransitionTable } from './illegal-transition.ts';

/**
 * The build's lifecycle (SPEC §5). QUEUED: accepted. PREPARING: fetching, reading the job, atomizing, and
 * waiting for the first worker. BUILDING: a worker has been assigned. The last four are terminal.
 */
export const BUILD_STATUSES = ['QUEUED', 'PREPARING', 'BUILDING', 'SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];
export type TerminalStatus = Extract<BuildStatus, 'SUCCESS' | 'FAILURE' | 'ERROR' | 'CANCELED'>;

/** The one table of legal status moves; the store enforces the same table in SQL (build-store.ts). */
export const BUILD_STATUS_MOVES: TransitionTable<BuildStatus> = {
  QUEUED: ['PREPARING', 'CANCELED', 'ERROR'],
  // SUCCESS straight from PREPARING: a job with zero atoms has nothing to build.
  PREPARING: ['BUILDING', 'SUCCESS', 'CANCELED', 'ERROR'],
  BUILDING: ['SUCCESS', 'FAILURE', 'CANCELED', 'ERROR'],
  SUCCESS: [],
  FAILURE: [],
  ERROR: [],
  CANCELED: [],
};

export function canMove(from: BuildStatus, to: BuildStatus): boolean {
  return BUILD_STATUS_MOVES[from].includes(to);
}

/** The status a build moves to; throws IllegalTransitionError when the table does not allow it. */
export function transitionBuildStatus(buildId: number, from: BuildStatus, to: BuildStatus): BuildStatus {
  return checkTransition('build status', BUILD_STATUS_MOVES, from, to, `build ${buildId}`);
}

/** The statuses a build may be in to move to `to` (the SQL guard's `status IN (...)`). */
export function statusesMovingTo(to: BuildStatus): BuildStatus[] {
  return BUILD_STATUSES.filter((from) => canMove(from, to));
}

export function isTerminal(status: BuildStatus): status is TerminalStatus {
  return BUILD_STATUS_MOVES[status].length === 0;
}

export const ATOM_STATES = ['NOT_STARTED', 'IN_PROGRESS', 'COMPLETED'] as const;
export type AtomState = (typeof ATOM_STATES)[number];

/** SPEC §2.1: `"{done} of {total} subjobs are complete ({pct with one decimal}%)."`, null with no subjobs. */
export function buildDetails(completedSubjobs: number, totalSubjobs: number): string | null {
  if (totalSubjobs === 0) return null;
  const percent = ((completedSubjobs / totalSubjobs) * 100).toFixed(1);
  return `${completedSubjobs} of ${totalSubjobs} subjobs are complete (${percent}%).`;
}
