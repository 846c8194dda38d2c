import type { ArtifactChunkHeader, WorkerMessage } from '../../shared/protocol.ts';
import type { Lease, WorkerEntry } from './worker-registry.ts';

type Message<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;

/** What a worker session reports to the build side; the build manager implements it. */
export interface WorkerEvents {
  /**
   * A worker new to this master (it restarted) says it still runs these leases: those the master kept for it
   * are resumed and returned; the worker stops the others.
   */
  adoptLeases(worker: WorkerEntry, leaseIds: readonly string[]): string[];
  /**
   * The builds the worker says are set up there (its registration): the master's view of that worker is
   * made to match, before it is given any work (issue 15).
   */
  buildsReported(worker: WorkerEntry, builds: NonNullable<Message<'register'>['builds']>): void;
  workerReady(worker: WorkerEntry): void;
  /** The worker's own health verdict changed (SPEC §13): unhealthy workers get no new work, healthy ones again. */
  healthChanged(worker: WorkerEntry, health: 'healthy' | 'unhealthy', reason: string | null): void;
  /** The worker is gone for good (silent too long, or not back within the lease window). */
  workerLost(worker: WorkerEntry, reason: string): void;
  /** The worker left cleanly after a drain; it held no leases. */
  workerLeft(worker: WorkerEntry): void;
  setupFinished(worker: WorkerEntry, message: Message<'setup_finished'>): void;
  teardownFinished(worker: WorkerEntry, message: Message<'teardown_finished'>): void;
  atomStarted(worker: WorkerEntry, lease: Lease, message: Message<'atom_started'>): Promise<void>;
  atomOutput(worker: WorkerEntry, lease: Lease, message: Message<'atom_output'>): void;
  artifactChunk(worker: WorkerEntry, lease: Lease, header: ArtifactChunkHeader, bytes: Buffer): Promise<void>;
  atomFinished(worker: WorkerEntry, lease: Lease, message: Message<'atom_finished'>): Promise<void>;
  /**
   * The worker's executor is free again: called as soon as subjob_finished arrives, so the next subjob is
   * not held up by the master still writing the last result's files.
   */
  executorFreed(worker: WorkerEntry, lease: Lease): void;
  /** The worker did not run the lease's subjob (subjob_refused): called at once, before executorFreed. */
  subjobRefused(worker: WorkerEntry, lease: Lease, message: Message<'subjob_refused'>): void;
  /** The same subjob_finished, in order after the lease's other messages: settles what is left of the lease. */
  subjobFinished(worker: WorkerEntry, lease: Lease): void;
  /** A lease the worker did not list when it came back: it no longer runs it. */
  leaseDropped(worker: WorkerEntry, lease: Lease): void;
}
