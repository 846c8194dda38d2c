import type { Db } from './database.ts';

/** A size set by PUT /v2/pools/:name, and the conf's sizes it overrode (migration 4, table pool_sizes). */
export interface PoolSizeRow {
  readonly pool: string;
  readonly minWorkers: number;
  readonly maxWorkers: number;
  /** The conf's min_workers and max_workers when the size was set: a conf edited since wins over it. */
  readonly confMinWorkers: number;
  readonly confMaxWorkers: number;
  /** Epoch seconds. */
  readonly setAt: number;
}

interface Row { pool: string; min_workers: number; max_workers: number; conf_min_workers: number; conf_max_workers: number; set_at: number }

export function createPoolSizeStore(db: Db) {
  const upsert = db.prepare(`INSERT INTO pool_sizes (pool, min_workers, max_workers, conf_min_workers, conf_max_workers, set_at)
    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (pool) DO UPDATE SET min_workers = excluded.min_workers, max_workers = excluded.max_workers,
    conf_min_workers = excluded.conf_min_workers, conf_max_workers = excluded.conf_max_workers, set_at = excluded.set_at`);
  const remove = db.prepare('DELETE FROM pool_sizes WHERE pool = ?');
  const all = db.prepare<[], Row>('SELECT pool, min_workers, max_workers, conf_min_workers, conf_max_workers, set_at FROM pool_sizes ORDER BY pool');
  return {
    set(row: PoolSizeRow): void {
      upsert.run(row.pool, row.minWorkers, row.maxWorkers, row.confMinWorkers, row.confMaxWorkers, row.setAt);
    },
    remove(pool: string): void {
      remove.run(pool);
    },
    all(): PoolSizeRow[] {
      return all.all().map((row) => ({
        pool: row.pool, minWorkers: row.min_workers, maxWorkers: row.max_workers,
        confMinWorkers: row.conf_min_workers, confMaxWorkers: row.conf_max_workers, setAt: row.set_at,
      }));
    },
  };
}

export type PoolSizeStore = ReturnType<typeof createPoolSizeStore>;
