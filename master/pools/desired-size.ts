/** How many workers each pool should run (SPEC §13): enough for the executors work can use, within [min, max]. */
export interface PoolSizing {
  readonly name: string;
  readonly minWorkers: number;
  readonly maxWorkers: number;
  readonly executorsPerWorker: number;
}

/**
 * `demand` is the executors that queued and running work can use; `otherExecutors` those of connected workers
 * in no pool, which serve that work first. Pools take the rest in conf order, each first with its minimum.
 */
export function desiredSizes(pools: readonly PoolSizing[], demand: number, otherExecutors: number): Map<string, number> {
  let remaining = Math.max(0, demand - otherExecutors);
  // The minimums run anyway, so their executors count before any pool grows.
  for (const pool of pools) remaining = Math.max(0, remaining - pool.minWorkers * pool.executorsPerWorker);
  const sizes = new Map<string, number>();
  for (const pool of pools) {
    const extra = Math.min(pool.maxWorkers - pool.minWorkers, Math.ceil(remaining / pool.executorsPerWorker));
    sizes.set(pool.name, pool.minWorkers + Math.max(0, extra));
    remaining = Math.max(0, remaining - Math.max(0, extra) * pool.executorsPerWorker);
  }
  return sizes;
}
