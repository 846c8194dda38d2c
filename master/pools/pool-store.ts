import type { Db } from '../store/database.ts';

/** A worker a pool started, as remembered across master restarts (so it is found again, never duplicated). */
export interface PoolWorkerRow {
  readonly name: string;
  readonly pool: string;
  readonly provider: string;
  /** local: the worker process; command: the start command's process group; null when unknown. */
  readonly pid: number | null;
  /** Epoch seconds. */
  readonly startedAt: number;
  /** The master decided to stop it: a master started before the stop ended finishes it, never takes it back. */
  readonly isStopping: boolean;
}

/**
 * The pool_workers table. Created here rather than in the numbered migrations: it belongs to master/pools
 * alone and holds nothing another table refers to, so `IF NOT EXISTS` on open is all the schema it needs.
 */
export function createPoolStore(db: Db) {
  db.exec(`CREATE TABLE IF NOT EXISTS pool_workers (
    name TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    provider TEXT NOT NULL,
    pid INTEGER,
    started_at REAL NOT NULL
  ) WITHOUT ROWID`);
  // Added after the table shipped: a table from before gets the column here.
  const columns = db.prepare<[], { name: string }>('SELECT name FROM pragma_table_info(\'pool_workers\')').all().map((column) => column.name);
  if (!columns.includes('stopping')) db.exec('ALTER TABLE pool_workers ADD COLUMN stopping INTEGER NOT NULL DEFAULT 0');
  const insert = db.prepare('INSERT OR REPLACE INTO pool_workers (name, pool, provider, pid, started_at, stopping) VALUES (?, ?, ?, ?, ?, 0)');
  const markStopping = db.prepare('UPDATE pool_workers SET stopping = 1 WHERE name = ?');
  const remove = db.prepare('DELETE FROM pool_workers WHERE name = ?');
  const all = db.prepare<[], { name: string; pool: string; provider: string; pid: number | null; started_at: number; stopping: number }>(
    'SELECT name, pool, provider, pid, started_at, stopping FROM pool_workers ORDER BY started_at');
  return {
    insert(row: Omit<PoolWorkerRow, 'isStopping'>): void {
      insert.run(row.name, row.pool, row.provider, row.pid, row.startedAt);
    },
    markStopping(name: string): void {
      markStopping.run(name);
    },
    remove(name: string): void {
      remove.run(name);
    },
    all(): PoolWorkerRow[] {
      return all.all().map((row) => ({
        name: row.name, pool: row.pool, provider: row.provider, pid: row.pid, startedAt: row.started_at, isStopping: row.stopping !== 0,
      }));
    },
  };
}

export type PoolStore = ReturnType<typeof createPoolStore>;
