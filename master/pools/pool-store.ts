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
  const insert = db.prepare('INSERT OR REPLACE INTO pool_workers (name, pool, provider, pid, started_at) VALUES (?, ?, ?, ?, ?)');
  const remove = db.prepare('DELETE FROM pool_workers WHERE name = ?');
  const all = db.prepare<[], { name: string; pool: string; provider: string; pid: number | null; started_at: number }>(
    'SELECT name, pool, provider, pid, started_at FROM pool_workers ORDER BY started_at');
  return {
    insert(row: PoolWorkerRow): void {
      insert.run(row.name, row.pool, row.provider, row.pid, row.startedAt);
    },
    remove(name: string): void {
      remove.run(name);
    },
    all(): PoolWorkerRow[] {
      return all.all().map((row) => ({ name: row.name, pool: row.pool, provider: row.provider, pid: row.pid, startedAt: row.started_at }));
    },
  };
}

export type PoolStore = ReturnType<typeof createPoolStore>;
