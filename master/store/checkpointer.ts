import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Db } from './database.ts';

/**
 * WAL checkpoints on a thread of their own (issue 18). SQLite checkpoints inside whichever commit crosses
 * wal_autocheckpoint (1000 pages): that commit then copies the WAL into the database file and syncs it, on the
 * loop that answers HTTP, and a status read waits behind it. Here a worker thread with its own connection runs
 * a PASSIVE checkpoint every intervalMs (it never blocks the writer), and the main connection stops
 * checkpointing once that thread is up. Should the thread fail, the main connection checkpoints again itself,
 * so the WAL never grows without bound.
 */

/** How often the thread checkpoints; the WAL holds at most about this long of writes. */
export const CHECKPOINT_INTERVAL_MS = 1000;
/** SQLite's own default, restored when the thread is gone. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;

// Plain CommonJS so it runs as it is from a bundle or from the sources; the driver's path comes from here.
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
db.pragma('busy_timeout = 0');
const checkpoint = () => {
  try {
    const [row] = db.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ type: 'checkpointed', pages: row ? row.checkpointed : 0 });
  } catch (error) {
    // Busy (another checkpoint): the next turn does it.
  }
};
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.on('message', (message) => {
  if (message !== 'close') return;
  clearInterval(timer);
  checkpoint();
  db.close();
  parentPort.close();
});
`;

export interface Checkpointer {
  /** Checkpoints the thread has run that found WAL frames to copy (for tests and diagnostics). */
  readonly checkpoints: number;
  /** Whether the thread is up and the main connection has stopped checkpointing. */
  readonly isActive: boolean;
  /** The thread has ended (closed, or failed): the main connection checkpoints itself again. */
  readonly hasEnded: boolean;
  close(): void;
}

export function startCheckpointer(db: Db, path: string, intervalMs = CHECKPOINT_INTERVAL_MS): Checkpointer {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  const worker = new Worker(THREAD_SOURCE, { eval: true, workerData: { driver, path, intervalMs } });
  // The master's exit never waits for this thread.
  worker.unref();
  let isActive = false;
  let isClosed = false;
  let checkpoints = 0;
  let hasEnded = false;
  const stopped = () => {
    if (isActive && db.open) db.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
    isActive = false;
  };
  worker.on('online', () => {
    if (isClosed || !db.open) return;
    db.pragma('wal_autocheckpoint = 0');
    isActive = true;
  });
  worker.on('message', (message: { type: string; pages: number }) => {
    if (message.type === 'checkpointed' && message.pages > 0) checkpoints++;
  });
  // A failed thread (it could not open the file, say) leaves checkpoints to the main connection.
  worker.on('error', stopped);
  worker.on('exit', () => {
    stopped();
    hasEnded = true;
  });
  return {
    get checkpoints() {
      return checkpoints;
    },
    get isActive() {
      return isActive;
    },
    get hasEnded() {
      return hasEnded;
    },
    close() {
      if (isClosed) return;
      isClosed = true;
      stopped();
      worker.postMessage('close');
    },
  };
}
