import type { Db } from './database.ts';
import { errorMessage } from '../../shared/errors.ts';

/**
 * Whose a batched write is: a build's id (its failure fails that build) or null, the master's own
 * bookkeeping (its failure is logged). A request's own writes are not batched: they throw to that request.
 */
export type WriteOwner = number | null;

/** A write; it may return what to do once the write is committed (tell listeners about a new row). */
export type BatchedWrite = () => unknown;

export interface WriteFailurePolicy {
  /** A build's writes failed (rolled back): the build is to end in ERROR with the reason. Called once per build. */
  buildWriteFailed(buildId: number, error: unknown): void;
  /** Logged once per owner (each build, and once for the master's own writes). */
  logFailure(owner: WriteOwner, error: unknown): void;
}

/** How many failed builds are remembered, so each is reported once (a bound: builds failing this way are rare). */
const MAX_REMEMBERED_FAILURES = 1000;

/**
 * Collects writes from the per-atom path and commits them together in one transaction on the next turn of
 * the event loop, so thousands of results per second cost a handful of commits. Readers call flush()
 * first, so nobody ever reads around a pending write.
 *
 * Write policy: flush() never throws. When the batch fails, it is rolled back and run again with each write
 * in its own savepoint, so the failing writes alone are lost and everyone else's commit; each failure goes
 * to its owner (the build fails with the reason), logged once. A failure never reaches an unrelated reader
 * (flush() before a GET) nor escapes from setImmediate (which would kill the master).
 */
export class WriteBatcher {
  readonly #db: Db;
  #pending: BatchedWrite[] = [];
  #owners: WriteOwner[] = [];
  #scheduled: NodeJS.Immediate | null = null;
  #isClosed = false;
  readonly #maxPending: number;
  #policy: WriteFailurePolicy | null = null;
  readonly #reported = new Set<WriteOwner>();

  /**
   * A commit runs on the loop that answers HTTP: past maxPending writes the batch commits at once, so no turn
   * holds more than that (1000 writes, about 80 results, take a few ms; 5000 kept status reads waiting, issue 18).
   */
  constructor(db: Db, maxPending = 1000) {
    this.#db = db;
    this.#maxPending = maxPending;
  }

  /** Who hears of failed writes (the build side); until set, failures are only counted as reported. */
  setFailurePolicy(policy: WriteFailurePolicy): void {
    this.#policy = policy;
  }

  add(write: BatchedWrite, owner: WriteOwner = null): void {
    // After close nothing can be written; a late event from a closing socket must not crash the process.
    if (this.#isClosed) return;
    this.#pending.push(write);
    this.#owners.push(owner);
    if (this.#pending.length >= this.#maxPending) this.flush();
    else this.#scheduled ??= setImmediate(() => this.flush());
  }

  /** Commits what is pending, then refuses further writes. */
  close(): void {
    this.flush();
    this.#isClosed = true;
  }

  flush(): void {
    if (this.#isClosed) return;
    if (this.#scheduled) {
      clearImmediate(this.#scheduled);
      this.#scheduled = null;
    }
    if (this.#pending.length === 0) return;
    const writes = this.#pending;
    const owners = this.#owners;
    this.#pending = [];
    this.#owners = [];
    const committed: (() => void)[] = [];
    try {
      this.#db.transaction(() => {
        for (const write of writes) {
          const after = write();
          if (typeof after === 'function') committed.push(after as () => void);
        }
      })();
    } catch {
      committed.length = 0;
      this.#commitOneByOne(writes, owners, committed);
    }
    for (const after of committed) after();
  }

  /** The slow path after a failed batch: each write in a savepoint, failures sorted by owner. */
  #commitOneByOne(writes: readonly BatchedWrite[], owners: readonly WriteOwner[], committed: (() => void)[]): void {
    const failures = new Map<WriteOwner, unknown>();
    try {
      this.#db.transaction(() => {
        writes.forEach((write, index) => {
          const owner = owners[index]!;
          // A build that failed keeps no half of a batch: its later writes are dropped with it.
          if (failures.has(owner) && owner !== null) return;
          try {
            this.#db.transaction(() => {
              const after = write();
              if (typeof after === 'function') committed.push(after as () => void);
            })();
          } catch (error) {
            if (!failures.has(owner)) failures.set(owner, error);
          }
        });
      })();
    } catch (error) {
      // The commit itself failed (a full or read-only disk): nothing of the batch is stored, for anyone.
      committed.length = 0;
      for (const owner of new Set(owners)) failures.set(owner, error);
    }
    for (const [owner, error] of failures) this.#report(owner, error);
  }

  #report(owner: WriteOwner, error: unknown): void {
    const isNew = !this.#reported.has(owner);
    if (isNew) {
      if (this.#reported.size >= MAX_REMEMBERED_FAILURES) this.#reported.delete(this.#reported.values().next().value as WriteOwner);
      this.#reported.add(owner);
      this.#policy?.logFailure(owner, error);
      if (owner !== null) this.#policy?.buildWriteFailed(owner, error);
    }
  }
}

/** The reason a build failed because the master could not record it. */
export function writeFailureText(error: unknown): string {
  return `The master could not record the build in its database: ${errorMessage(error)}`;
}
