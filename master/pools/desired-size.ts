/** How many workers each pool should run (SPEC §13): enough for the executors work can use, within [min, max]. */
export interface PoolSizing {
  readonly name: string;
  readonly minWorkers: number;
  readonly maxWorkers: number;
  readonly executorsPerWorker: number;
  readonly labels: readonly string[];
}

/** Executors one build can use now, and the labels its job requires of a worker. */
export interface Demand {
  readonly executors: number;
  readonly requires: readonly string[];
}

/** Executors of a connected worker in no pool: they serve the work they can before any pool grows. */
export interface OtherWorker {
  readonly executors: number;
  readonly labels: ReadonlySet<string>;
}

/**
 * Work goes only where its labels are (a pool serves a build when it carries every label the job requires).
 * Workers outside the pools serve first, then every pool's minimum, then pools grow in conf order.
 */
export function desiredSizes(pools: readonly PoolSizing[], demands: readonly Demand[], others: readonly OtherWorker[]): Map<string, number> {
  const left = demands.map((demand) => ({ requires: demand.requires, executors: Math.max(0, demand.executors) }));
  const serve = (labels: ReadonlySet<string>, executors: number): void => {
    let free = executors;
    for (const item of left) {
      if (free <= 0) return;
      if (item.executors === 0 || !item.requires.every((label) => labels.has(label))) continue;
      const used = Math.min(free, item.executors);
      item.executors -= used;
      free -= used;
    }
  };
  for (const other of others) serve(other.labels, other.executors);
  const labelsOf = new Map(pools.map((pool) => [pool.name, new Set(pool.labels)]));
  for (const pool of pools) serve(labelsOf.get(pool.name)!, pool.minWorkers * pool.executorsPerWorker);

  const sizes = new Map<string, number>();
  for (const pool of pools) {
    const labels = labelsOf.get(pool.name)!;
    const wanted = left.filter((item) => item.requires.every((label) => labels.has(label))).reduce((sum, item) => sum + item.executors, 0);
    const extra = Math.max(0, Math.min(pool.maxWorkers - pool.minWorkers, Math.ceil(wanted / pool.executorsPerWorker)));
    sizes.set(pool.name, pool.minWorkers + extra);
    serve(labels, extra * pool.executorsPerWorker);
  }
  return sizes;
}
