import type { EventRecord, EventTag } from '../store/event-store.ts';

/** The log's tags that move a build's status (statusAfter): the events a BUILD_STATUS stream needs. */
export const STATUS_CHANGING_TAGS = ['BUILD_REQUEST_QUEUED', 'BUILD_PREPARE_START', 'BUILD_SETUP_START', 'BUILD_RETRIED', 'BUILD_FINISHED'] as const satisfies readonly EventTag[];

/**
 * The build status an event of the log moves its build to, or null. The build manager writes one of these
 * events beside every status change (queued, preparation, the first worker's setup, the end), so the
 * stream's BUILD_STATUS events follow from the log alone: a resumed or restarted stream derives the same
 * ones, with the same ids, and a client never needs to poll.
 */
export function statusAfter(event: EventRecord): string | null {
  switch (event.__tag__) {
    case 'BUILD_REQUEST_QUEUED': return 'QUEUED';
    case 'BUILD_PREPARE_START': return 'PREPARING';
    case 'BUILD_SETUP_START': return 'BUILDING';
    case 'BUILD_RETRIED': return 'BUILDING';
    case 'BUILD_FINISHED': return typeof event['status'] === 'string' ? event['status'] : null;
    default: return null;
  }
}

/**
 * Remembers the status last sent per build, so repeated events (a setup start on each worker) give one
 * BUILD_STATUS. Bounded: the oldest builds are forgotten first, which at worst repeats a status.
 */
export class StatusMemory {
  readonly #last = new Map<number, string>();
  readonly #maxBuilds: number;

  constructor(maxBuilds = 10_000) {
    this.#maxBuilds = maxBuilds;
  }

  /** The BUILD_STATUS payload this event implies, or null when it changes nothing. */
  change(event: EventRecord): { build_id: number; status: string } | null {
    const status = statusAfter(event);
    const buildId = event['build_id'];
    if (status === null || typeof buildId !== 'number') return null;
    if (this.#last.get(buildId) === status) return null;
    this.#last.delete(buildId);
    this.#last.set(buildId, status);
    if (this.#last.size > this.#maxBuilds) this.#last.delete(this.#last.keys().next().value!);
    return { build_id: buildId, status };
  }
}
