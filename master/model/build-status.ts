/**
 * The build's lifecycle (SPEC §5). QUEUED: accepted. PREPARING: fetching, reading the job, atomizing, and
 * waiting for the first worker. BUILDING: a worker has been assigned. The last four are terminal.
 */
export const BUILD_STATUSES = ['QUEUED', 'PREPARING', 'BUILDING', 'SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];
export type TerminalStatus = Extract<BuildStatus, 'SUCCESS' | 'FAILURE' | 'ERROR' | 'CANCELED'>;

const NEXT: Record<BuildStatus, readonly BuildStatus[]> = {
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
  return NEXT[from].includes(to);
}

export function isTerminal(status: BuildStatus): status is TerminalStatus {
  return NEXT[status].length === 0;
}

export const ATOM_STATES = ['NOT_STARTED', 'IN_PROGRESS', 'COMPLETED'] as const;
export type AtomState = (typeof ATOM_STATES)[number];

/** SPEC §2.1: `"{done} of {total} subjobs are complete ({pct with one decimal}%)."`, null with no subjobs. */
export function buildDetails(completedSubjobs: number, totalSubjobs: number): string | null {
  if (totalSubjobs === 0) return null;
  const percent = ((completedSubjobs / totalSubjobs) * 100).toFixed(1);
  return `${completedSubjobs} of ${totalSubjobs} subjobs are complete (${percent}%).`;
}
