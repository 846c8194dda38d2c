import { join } from 'node:path';
import type { Logger } from '../../shared/log.ts';
import type { Conf } from '../../shared/conf.ts';
import type { Store } from '../store/index.ts';
import type { EventStore } from '../store/event-store.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import type { PoolGauges } from './pool-manager.ts';
import type { Demand } from './desired-size.ts';
import { PoolManager } from './pool-manager.ts';
import { createPoolStore } from './pool-store.ts';
import { createPoolSizeStore } from '../store/pool-size-store.ts';

/** Where the HTTP routes find the pools: set once the master listens (pool workers need its port). */
export interface PoolsHandle {
  current: PoolManager | null;
}

/**
 * The master's pools, started; null without `[pool NAME]` sections (the table is still opened, so that a
 * master whose pools were removed from the conf stops the workers they left behind).
 */
export function startPools(options: {
  conf: Pick<Conf, 'baseDirectory' | 'killGraceMs'> & Partial<Pick<Conf, 'confFile' | 'pools'>>;
  log: Logger; store: Pick<Store, 'db'>; registry: WorkerRegistry; metrics: PoolGauges; events: EventStore;
  demand: () => readonly Demand[];
  /** The master as seen from its own host (local pools). */
  url: string;
  /** The master as other machines reach it (command pools' MASTER_URL). */
  hostUrl: string;
}): PoolManager | null {
  const { conf } = options;
  const poolStore = createPoolStore(options.store.db);
  const pools = conf.pools ?? [];
  if (pools.length === 0 && poolStore.all().length === 0) return null;
  const log = options.log.child({ component: 'pools' });
  const makeContext = (masterUrl: string) => ({
    poolsRoot: join(conf.baseDirectory, 'pools'), confFile: conf.confFile ?? '', masterUrl, killGraceMs: conf.killGraceMs,
  });
  const manager = new PoolManager({
    pools, registry: options.registry, demand: options.demand, store: poolStore, sizes: createPoolSizeStore(options.store.db), events: options.events, gauges: options.metrics, log,
    provider: (pool) => makeContext(pool.provider === 'local' ? options.url : options.hostUrl),
  });
  manager.start();
  return manager;
}
