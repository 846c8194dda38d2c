import { openDatabase, type Db } from './database.ts';
import { createBuildStore, type BuildStore } from './build-store.ts';
import { createAtomStore, type AtomStore } from './atom-store.ts';
import { createEventStore, type EventStore } from './event-store.ts';
import { createWorkerStore, type WorkerStore } from './worker-store.ts';
import { createTimingStore, type TimingStore } from './timing-store.ts';
import { createLeaseStore, type LeaseStore } from './lease-store.ts';
import { createAttemptStore, type AttemptStore } from './attempt-store.ts';
import { createRetryStore, type RetryStore } from './retry-store.ts';
import { WriteBatcher } from './write-batcher.ts';
import { startCheckpointer, type Checkpointer } from './checkpointer.ts';

export interface Store {
  readonly db: Db;
  readonly batcher: WriteBatcher;
  readonly builds: BuildStore;
  readonly atoms: AtomStore;
  readonly events: EventStore;
  readonly workers: WorkerStore;
  readonly timings: TimingStore;
  readonly leases: LeaseStore;
  readonly attempts: AttemptStore;
  readonly retries: RetryStore;
  /** WAL checkpoints off the main thread (checkpointer.ts); null for an in-memory database. */
  readonly checkpointer: Checkpointer | null;
  close(): void;
}

export function openStore(path: string): Store {
  const db = openDatabase(path);
  const batcher = new WriteBatcher(db);
  const checkpointer = path === ':memory:' ? null : startCheckpointer(db, path);
  let isClosed = false;
  return {
    db,
    batcher,
    checkpointer,
    builds: createBuildStore(db),
    atoms: createAtomStore(db),
    events: createEventStore(db, batcher),
    workers: createWorkerStore(db),
    timings: createTimingStore(db, batcher),
    leases: createLeaseStore(db, batcher),
    attempts: createAttemptStore(db),
    retries: createRetryStore(db),
    close() {
      if (isClosed) return;
      isClosed = true;
      batcher.close();
      checkpointer?.close();
      db.close();
    },
  };
}
