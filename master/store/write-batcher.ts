import type { Db } from './database.ts';

/**
 * Collects writes from the per-atom path and commits them together in one transaction on the next turn of
 * the event loop, so thousands of results per second cost a handful of commits. Readers call flush()
 * first, so nobody ever reads around a pending write.
 */
export class WriteBatcher {
  readonly #db: Db;
  #pending: (() => void)[] = [];
  #scheduled: NodeJS.Immediate | null = null;
  #isClosed = false;
  readonly #maxPending: number;

  constructor(db: Db, maxPending = 5000) {
    this.#db = db;
    this.#maxPending = maxPending;
  }

  add(write: () => void): void {
    // After close nothing can be written; a late event from a closing socket must not crash the process.
    if (this.#isClosed) return;
    this.#pending.push(write);
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
    this.#pending = [];
    this.#db.transaction(() => {
      for (const write of writes) write();
    })();
  }
}
