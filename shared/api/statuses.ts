/**
 * The build statuses and atom states the API shows (SPEC §2.1, §5): the one list every side reads, the
 * master's routes, the command line and the tests. The order is the lifecycle's; the last four are terminal.
 */
export const BUILD_STATUSES = ['QUEUED', 'PREPARING', 'BUILDING', 'SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];

export const TERMINAL_STATUSES = ['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'] as const satisfies readonly BuildStatus[];
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

/** Takes any string, so that a client can ask it of a status read off the wire before trusting it. */
export function isTerminalStatus(status: string): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

export const ATOM_STATES = ['NOT_STARTED', 'IN_PROGRESS', 'COMPLETED'] as const;
