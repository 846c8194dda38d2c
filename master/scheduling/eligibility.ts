/**
 * Which workers may be given a build's work (SPEC §13): a worker must carry every label the job `requires`
 * (Cider-CI traits), and an unhealthy one gets no new work at all until it says it is healthy again. Pure
 * functions: the dispatcher's plan and the no-worker watch ask the same questions and get the same answers.
 */

export const WORKER_HEALTHS = ['healthy', 'unhealthy', 'suspect'] as const;
/**
 * healthy: heartbeats on time and its own check passes. unhealthy: its health_check_command fails or its disk
 * is below min_disk_free_bytes (it said so). suspect: its heartbeats are late; it may be gone, or only slow,
 * so it keeps its work and may take more until the master declares it lost.
 */
export type WorkerHealth = (typeof WORKER_HEALTHS)[number];

/** What eligibility needs to know of a worker. */
export interface EligibleWorker {
  readonly labels: ReadonlySet<string>;
  readonly health: WorkerHealth;
}

/** The labels of `requires` this worker lacks, in the job's order; [] when it carries them all. */
export function missingLabels(labels: ReadonlySet<string>, requires: readonly string[] | undefined): string[] {
  return (requires ?? []).filter((label) => !labels.has(label));
}

/** Does it carry every required label? (No requirement: any worker does.) */
export function carriesLabels(labels: ReadonlySet<string> | undefined, requires: readonly string[] | undefined): boolean {
  return missingLabels(labels ?? new Set(), requires).length === 0;
}

/** May the worker be given new work at all? Suspect workers may: a late heartbeat is not yet a lost worker. */
export function acceptsNewWork(health: WorkerHealth | undefined): boolean {
  return health !== 'unhealthy';
}

/** May this worker be given new work of a job with these requirements now? */
export function isEligible(worker: EligibleWorker, requires: readonly string[] | undefined): boolean {
  return acceptsNewWork(worker.health) && carriesLabels(worker.labels, requires);
}

/**
 * A worker's health as the master shows it: what the worker last said, or suspect when its heartbeats are
 * late (more than two intervals since the last word) while it is still counted alive.
 */
export function judgeHealth(input: {
  readonly reported: 'healthy' | 'unhealthy';
  readonly lastSeenMs: number;
  readonly heartbeatIntervalMs: number;
  readonly nowMs: number;
}): WorkerHealth {
  if (input.reported === 'unhealthy') return 'unhealthy';
  return input.nowMs - input.lastSeenMs > 2 * input.heartbeatIntervalMs ? 'suspect' : 'healthy';
}
