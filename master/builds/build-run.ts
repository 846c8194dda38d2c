import type { StoredJob } from '../model/stored-job.ts';
import type { BuildRequest } from './build-request.ts';
import type { BuildStatus } from '../model/build-status.ts';
import { transitionRunPhase, type RunPhase } from '../model/run-phase.ts';
import type { WorkItem } from '../model/work-item.ts';
import type { RunSnapshot } from '../scheduling/dispatcher.ts';
import type { RunningArchive } from './archive.ts';
import { NumberHeap } from '../model/number-heap.ts';

export type { WorkItem } from '../model/work-item.ts';

export interface RunAtom {
  readonly variable: string;
  readonly value: string;
}

/**
 * The live side of one unfinished build on the master: what waits to run, who runs what, and the counters
 * that decide when it is done. SQLite holds the record; this holds what the dispatcher needs without a query.
 * Its phase follows model/run-phase.ts; its status mirrors the one SQLite holds (model/build-status.ts).
 */
export class BuildRun {
  readonly id: number;
  readonly priority: number;
  readonly request: BuildRequest;
  readonly abort = new AbortController();
  #phase: RunPhase = 'preparing';
  /** The status SQLite holds for the build, as last written (build-status-writer.ts keeps them equal). */
  status: BuildStatus = 'QUEUED';
  job: StoredJob | null = null;
  projectDir: string | null = null;
  executorsInUse = 0;
  readonly executorsPerWorker = new Map<number, number>();
  setupFailures = 0;
  /** Subjobs of this build refused by workers, all workers together (worker-setups.ts bounds them). */
  refusals = 0;
  /** Atoms of each subjob, by subjob id then atom id. */
  atoms: RunAtom[][] = [];
  remainingAtoms = 0;
  completedSubjobs = 0;
  /** The archives being written while the build runs (result-recorder.ts, finisher.ts); null before its first result. */
  archive: RunningArchive | null = null;
  // Per-atom counters in typed arrays, not maps of "subjob/atom" strings: 100,000 atoms cost 400 KB here and
  // no garbage per result (issue 18). An atom's slot is #atomOffset[subjobId] + atomId.
  #remainingPerSubjob = new Int32Array(0);
  #atomOffset = new Int32Array(1);
  #attempts = new Uint32Array(0);
  readonly #roundStarts = new Map<string, number>();
  /** Requeued work runs first (SPEC §5: "at the front"); kept apart so taking from the front stays O(1). */
  readonly #front: WorkItem[] = [];
  #queue: WorkItem[] = [];
  #queueHead = 0;
  /** How long this build's atoms ran lately (seconds, a moving average); null before the first result. */
  #recentAtomSeconds: number | null = null;
  /** Per subjob, the seconds the plan expects it to take; NaN where no history told. */
  #expectedSeconds = new Float64Array(0);
  /** Freed BUILD_EXECUTOR_INDEX values as a binary min-heap: the lowest in O(log n), not a sort per lease. */
  readonly #freeBuildExecutors = new NumberHeap();
  #nextBuildExecutor = 0;

  constructor(id: number, priority: number, request: BuildRequest) {
    this.id = id;
    this.priority = priority;
    this.request = request;
  }

  /**
   * Loads the plan; subjobs whose atoms all have results count as complete and are not queued. Held atoms
   * (a restarted master waiting for their worker to come back) count as remaining but are not queued.
   */
  load(subjobs: readonly {
    id: number; atoms: readonly (RunAtom & { id: number; isComplete: boolean; isHeld?: boolean })[];
    /** Seconds the plan expects the subjob to take (timing history); absent when unknown. */
    expectedSeconds?: number | null;
  }[]): void {
    this.atoms = [];
    this.#queue = [];
    this.#queueHead = 0;
    this.remainingAtoms = 0;
    this.completedSubjobs = 0;
    const numSubjobs = subjobs.reduce((max, subjob) => Math.max(max, subjob.id + 1), 0);
    this.#remainingPerSubjob = new Int32Array(numSubjobs);
    this.#atomOffset = new Int32Array(numSubjobs + 1);
    for (const subjob of subjobs) this.#atomOffset[subjob.id + 1] = subjob.atoms.length;
    for (let id = 0; id < numSubjobs; id++) this.#atomOffset[id + 1]! += this.#atomOffset[id]!;
    this.#attempts = new Uint32Array(this.#atomOffset[numSubjobs]!);
    this.#expectedSeconds = new Float64Array(numSubjobs).fill(Number.NaN);
    for (const subjob of subjobs) if (subjob.expectedSeconds != null) this.#expectedSeconds[subjob.id] = subjob.expectedSeconds;
    for (const subjob of subjobs) {
      this.atoms[subjob.id] = subjob.atoms.map((atom) => ({ variable: atom.variable, value: atom.value }));
      const open = subjob.atoms.filter((atom) => !atom.isComplete).map((atom) => atom.id);
      if (open.length === 0) {
        this.completedSubjobs++;
        continue;
      }
      this.remainingAtoms += open.length;
      this.#remainingPerSubjob[subjob.id] = open.length;
      const queued = subjob.atoms.filter((atom) => !atom.isComplete && atom.isHeld !== true).map((atom) => atom.id);
      if (queued.length > 0) this.#queue.push({ subjobId: subjob.id, atomIds: queued, avoidWorkerId: null });
    }
  }

  get phase(): RunPhase {
    return this.#phase;
  }

  /** Throws IllegalTransitionError on a move model/run-phase.ts does not allow. */
  enterPhase(to: RunPhase): void {
    this.#phase = transitionRunPhase(this.id, this.#phase, to);
  }

  get numSubjobs(): number {
    return this.atoms.length;
  }

  get pendingCount(): number {
    return this.#front.length + this.#queue.length - this.#queueHead;
  }

  get hasPendingWork(): boolean {
    return this.#front.length > 0 || this.#queueHead < this.#queue.length;
  }

  /** What the dispatcher plans with: the front, and the head of the queue up to what could be handed out. */
  dispatchSnapshot(maxQueueItems: number): RunSnapshot {
    const end = Math.min(this.#queue.length, this.#queueHead + maxQueueItems);
    return {
      id: this.id,
      maxExecutors: this.job?.maxExecutors ?? null,
      maxExecutorsPerWorker: this.job?.maxExecutorsPerWorker ?? null,
      executorsInUse: this.executorsInUse,
      executorsPerWorker: this.executorsPerWorker,
      front: this.#front,
      queue: this.#queue.slice(this.#queueHead, end),
      pendingCount: this.pendingCount,
    };
  }

  /** Takes a planned item out of the pending work: any front item, or the queue's head (the plan takes it in order). */
  removePending(item: WorkItem): void {
    const at = this.#front.indexOf(item);
    if (at >= 0) {
      this.#front.splice(at, 1);
      return;
    }
    if (this.#queue[this.#queueHead] !== item) throw new Error(`build ${this.id}: planned work is not at the head of its queue`);
    this.#queue[this.#queueHead++] = undefined as unknown as WorkItem;
    if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  noteAtomTime(seconds: number): void {
    this.#recentAtomSeconds = this.#recentAtomSeconds === null ? seconds : this.#recentAtomSeconds * 0.9 + seconds * 0.1;
  }

  /** The seconds the plan expects the subjob to take, or null without timing history. */
  expectedSecondsOf(subjobId: number): number | null {
    const seconds = this.#expectedSeconds[subjobId];
    return seconds === undefined || Number.isNaN(seconds) ? null : seconds;
  }

  get recentAtomSeconds(): number | null {
    return this.#recentAtomSeconds;
  }

  /** Fresh work not yet handed out (requeued work at the front not counted). */
  get freshCount(): number {
    return this.#queue.length - this.#queueHead;
  }

  /** The queue's head, for an executor that is to run it next (DispatchLoop's send-ahead); none while work is requeued. */
  takeFreshItem(): WorkItem | null {
    if (this.#front.length > 0 || this.#queueHead >= this.#queue.length) return null;
    const item = this.#queue[this.#queueHead]!;
    this.removePending(item);
    return item;
  }

  requeueFront(item: WorkItem): void {
    this.#front.unshift(item);
  }

  clearPendingWork(): void {
    this.#front.length = 0;
    this.#queue = [];
    this.#queueHead = 0;
  }

  /** BUILD_EXECUTOR_INDEX: the lowest index no executor of this build holds now. */
  takeBuildExecutor(workerId: number): number {
    this.executorsInUse++;
    this.executorsPerWorker.set(workerId, (this.executorsPerWorker.get(workerId) ?? 0) + 1);
    return this.#freeBuildExecutors.pop() ?? this.#nextBuildExecutor++;
  }

  /** A restarted master keeps the index of a lease that may resume, so no other executor gets it meanwhile. */
  holdBuildExecutor(index: number): void {
    this.#nextBuildExecutor = Math.max(this.#nextBuildExecutor, index + 1);
    // Rare (a master restart): rebuilding the heap without the index keeps it simple.
    const free = this.#freeBuildExecutors.values().filter((value) => value !== index);
    if (free.length === this.#freeBuildExecutors.size) return;
    this.#freeBuildExecutors.clear();
    for (const value of free) this.#freeBuildExecutors.push(value);
  }

  /** The held index is in use again: its lease resumed on this worker. */
  adoptBuildExecutor(workerId: number): void {
    this.executorsInUse++;
    this.executorsPerWorker.set(workerId, (this.executorsPerWorker.get(workerId) ?? 0) + 1);
  }

  /** Its lease did not come back: the index is free for others. */
  releaseHeldBuildExecutor(index: number): void {
    this.#freeBuildExecutors.push(index);
  }

  releaseBuildExecutor(workerId: number, index: number): void {
    this.executorsInUse--;
    const perWorker = (this.executorsPerWorker.get(workerId) ?? 1) - 1;
    if (perWorker > 0) this.executorsPerWorker.set(workerId, perWorker);
    else this.executorsPerWorker.delete(workerId);
    this.#freeBuildExecutors.push(index);
  }

  /** Counts a start of an atom; returns which attempt this is (1 for the first). */
  countAttempt(subjobId: number, atomId: number): number {
    const slot = this.#slot(subjobId, atomId);
    const attempt = this.#attempts[slot]! + 1;
    this.#attempts[slot] = attempt;
    return attempt;
  }

  /** After a master restart: the runs SQLite recorded still count (retries, a clean folder for the next). */
  restoreAttempts(subjobId: number, atomId: number, attempts: number): void {
    if (attempts > 0) this.#attempts[this.#slot(subjobId, atomId)] = attempts;
  }

  /** Where an atom of the plan keeps its counter; an atom outside the plan is a bug of the caller. */
  #slot(subjobId: number, atomId: number): number {
    const start = this.#atomOffset[subjobId];
    const end = this.#atomOffset[subjobId + 1];
    if (!Number.isInteger(atomId) || start === undefined || end === undefined || atomId < 0 || start + atomId >= end) {
      throw new Error(`build ${this.id} has no atom ${atomId} in subjob ${subjobId}`);
    }
    return start + atomId;
  }

  /**
   * A retry asked through the API (SPEC §10) starts a new round for the atom: the job's `retries` count
   * again from its next attempt.
   */
  startRetryRound(subjobId: number, atomId: number): void {
    this.#roundStarts.set(`${subjobId}/${atomId}`, this.attemptsOf(subjobId, atomId));
  }

  /** The attempts the atom had before its current round (0 in the build's first run). */
  retryRoundStart(subjobId: number, atomId: number): number {
    return this.#roundStarts.get(`${subjobId}/${atomId}`) ?? 0;
  }

  attemptsOf(subjobId: number, atomId: number): number {
    return this.#attempts[this.#slot(subjobId, atomId)]!;
  }

  /** Records an accepted final result; returns whether its subjob is now complete. */
  completeAtom(subjobId: number, _atomId: number): boolean {
    this.remainingAtoms--;
    const left = (this.#remainingPerSubjob[subjobId] ?? 0) - 1;
    if (left > 0) {
      this.#remainingPerSubjob[subjobId] = left;
      return false;
    }
    if (subjobId < this.#remainingPerSubjob.length) this.#remainingPerSubjob[subjobId] = 0;
    this.completedSubjobs++;
    return true;
  }
}
