import type { WebSocket } from 'ws';
import type { MasterMessage } from '../../shared/protocol.ts';
import type { WorkerBuildState } from '../model/worker-build-state.ts';
import { judgeHealth, type WorkerHealth } from '../scheduling/eligibility.ts';

export type { WorkerBuildState } from '../model/worker-build-state.ts';

/**
 * One subjob (or what is left of it) handed to one executor. A result is accepted only through a live
 * lease and only once per atom; a revoked lease's messages are ignored. Only protocol state lives here:
 * leases are created, revoked, adopted and resumed by master/builds/lease-book.ts alone, and the files
 * they write belong to master/builds/lease-files.ts.
 */
export interface Lease {
  readonly id: string;
  readonly workerId: number;
  readonly buildId: number;
  readonly subjobId: number;
  readonly executorIndex: number;
  readonly buildExecutorIndex: number;
  /** Atom ids with no accepted result yet. */
  readonly unfinished: Set<number>;
  isRevoked: boolean;
  /** The build's executor slot was given back (when the worker freed it, or when the lease was revoked). */
  hasReleasedBuildExecutor: boolean;
  /**
   * The build executor slot this lease holds, shared with a lease sent ahead for the same executor (issue 18):
   * the slot goes back to the build when the last of its holders lets go.
   */
  readonly buildExecutorHold: { holders: number };
  /** Messages of one lease are handled strictly in order, each after the previous one's I/O; null when none is in flight. */
  chain: Promise<void> | null;
  /**
   * Console bytes received per started, unfinished atom, counted as frames arrive (before their I/O): what a
   * worker that comes back is told the master holds.
   */
  readonly outputBytes: Map<number, number>;
}

/** A worker's last heartbeat figures; a figure it never sent is absent. */
export interface WorkerMachineReport {
  readonly reported: 'healthy' | 'unhealthy';
  readonly reason: string | null;
  readonly cpuCount?: number;
  readonly load1?: number;
  readonly memoryTotalBytes?: number;
  readonly memoryAvailableBytes?: number;
  readonly diskFreeBytes?: number | null;
}

export class WorkerEntry {
  readonly id: number;
  readonly name: string;
  readonly sessionId: string;
  readonly numExecutors: number;
  readonly heartbeatIntervalMs: number;
  readonly heartbeatFailureThreshold: number;
  socket: WebSocket | null;
  isAlive = true;
  isDraining = false;
  /** The pool it said it belongs to at registration (SPEC §13); null for none. */
  pool: string | null = null;
  lastSeenMs = Date.now();
  /** Set while the socket is gone but the worker may still come back and resume its leases. */
  disconnectTimer: NodeJS.Timeout | null = null;
  readonly leases = new Map<string, Lease>();
  /** Its state per build; written only by master/builds/worker-setups.ts, through model/worker-build-state.ts. */
  readonly builds = new Map<number, WorkerBuildState>();
  /** The labels it registered with (SPEC §13): a job's `requires` runs only where every one is carried. */
  labels: ReadonlySet<string> = new Set();
  /** What its last heartbeat said of its machine and its own health (SPEC §13); empty until one says. */
  machine: WorkerMachineReport = { reported: 'healthy', reason: null };
  /**
   * SPEC §15: why its atoms' failures made it suspect (they passed on other workers, suspect_after_failures
   * times in a row); unlike late heartbeats, this kind takes no new work until an operator clears it.
   */
  failureSuspicion: string | null = null;
  /** Its failures in a row that then passed on another worker; an atom passing here ends the row. */
  failuresPassedElsewhere = 0;
  /** When the last heartbeat arrived (epoch ms); null before the first. */
  lastHeartbeatMs: number | null = null;
  /**
   * Subjobs of a build this worker refused, and until when it is given none of that build (back-off,
   * master/builds/worker-setups.ts): a refusal is never answered by an immediate resend.
   */
  readonly refusals = new Map<number, { count: number; untilMs: number }>();
  readonly #freeExecutors: number[];
  /** It said it runs a subjob sent for a busy executor right after that executor's current one (issue 18). */
  acceptsQueuedSubjobs = false;

  constructor(init: {
    id: number; name: string; sessionId: string; numExecutors: number; heartbeatIntervalMs: number;
    heartbeatFailureThreshold: number; socket: WebSocket;
  }) {
    this.id = init.id;
    this.name = init.name;
    this.sessionId = init.sessionId;
    this.numExecutors = init.numExecutors;
    this.heartbeatIntervalMs = init.heartbeatIntervalMs;
    this.heartbeatFailureThreshold = init.heartbeatFailureThreshold;
    this.socket = init.socket;
    this.#freeExecutors = Array.from({ length: init.numExecutors }, (_, index) => init.numExecutors - 1 - index);
  }

  /** How long the worker may be silent, or gone, before its leases are given back. */
  get leaseWindowMs(): number {
    return this.heartbeatIntervalMs * this.heartbeatFailureThreshold;
  }

  get freeExecutorCount(): number {
    return this.#freeExecutors.length;
  }

  get executorsInUse(): number {
    return this.numExecutors - this.#freeExecutors.length;
  }

  get isConnected(): boolean {
    return this.socket !== null && this.socket.readyState === this.socket.OPEN;
  }

  /** Its health now: what it reported, or suspect while its heartbeats are late (scheduling/eligibility.ts). */
  health(nowMs = Date.now()): WorkerHealth {
    if (this.failureSuspicion !== null) return 'suspect';
    return judgeHealth({ reported: this.machine.reported, lastSeenMs: this.lastSeenMs, heartbeatIntervalMs: this.heartbeatIntervalMs, nowMs });
  }

  /** A worker that may be given new work now. */
  get isAvailable(): boolean {
    return this.isAlive && !this.isDraining && this.isConnected && this.failureSuspicion === null && this.#freeExecutors.length > 0;
  }

  /** The lowest free executor index, so MACHINE_EXECUTOR_INDEX values stay small and stable. */
  takeExecutor(): number {
    const index = this.#freeExecutors.pop();
    if (index === undefined) throw new Error(`worker ${this.id} has no free executor`);
    return index;
  }

  /** Takes this very executor (a resumed lease runs there); false when it is not free. */
  claimExecutor(index: number): boolean {
    const at = this.#freeExecutors.indexOf(index);
    if (at < 0) return false;
    this.#freeExecutors.splice(at, 1);
    return true;
  }

  /** The executor is free once no lease of this worker is on it (one sent ahead may still be). */
  releaseExecutor(index: number): void {
    if (this.#freeExecutors.includes(index) || this.leasesOn(index) > 0) return;
    this.#freeExecutors.push(index);
    this.#freeExecutors.sort((a, b) => b - a);
  }

  leasesOn(index: number): number {
    let count = 0;
    for (const lease of this.leases.values()) if (lease.executorIndex === index) count++;
    return count;
  }

  /** The builds this worker is not to be given now (a refusal's back-off has not run out). */
  heldOffBuilds(nowMs: number): Set<number> {
    const held = new Set<number>();
    for (const [buildId, refusal] of this.refusals) if (refusal.untilMs > nowMs) held.add(buildId);
    return held;
  }

  currentBuildIds(): number[] {
    const ids = new Set<number>(this.builds.keys());
    for (const lease of this.leases.values()) ids.add(lease.buildId);
    return [...ids].sort((a, b) => a - b);
  }

  send(message: MasterMessage): void {
    if (this.isConnected) this.socket!.send(JSON.stringify(message));
  }
}

export class WorkerRegistry {
  readonly #workers = new Map<number, WorkerEntry>();
  #isClosed = false;
  /**
   * Names of pool workers the master is stopping (pool-manager.ts). One that connects meanwhile — a frozen
   * process thawed, a network healed — is drained as it registers, before any dispatch could give it work.
   */
  readonly beingStopped = new Set<string>();

  /** Once the master is closing, sockets closing are no news: nothing is requeued or recorded any more. */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  close(): void {
    this.#isClosed = true;
    for (const worker of this.#workers.values()) {
      if (worker.disconnectTimer) clearTimeout(worker.disconnectTimer);
      worker.disconnectTimer = null;
    }
  }

  add(worker: WorkerEntry): void {
    this.#workers.set(worker.id, worker);
  }

  get(id: number): WorkerEntry | undefined {
    return this.#workers.get(id);
  }

  remove(id: number): void {
    this.#workers.delete(id);
  }

  all(): IterableIterator<WorkerEntry> {
    return this.#workers.values();
  }

  /** What GET /v1/worker shows: a draining worker leaves the list at once (SPEC §6). */
  listed(): WorkerEntry[] {
    return [...this.#workers.values()].filter((worker) => !worker.isDraining);
  }

  available(): WorkerEntry[] {
    return [...this.#workers.values()].filter((worker) => worker.isAvailable);
  }

  /** Dead workers are kept for the API and metrics, but only the most recent few. */
  forgetOldDead(keep = 100): void {
    const dead = [...this.#workers.values()].filter((worker) => !worker.isAlive);
    for (const worker of dead.slice(0, Math.max(0, dead.length - keep))) this.#workers.delete(worker.id);
  }
}
