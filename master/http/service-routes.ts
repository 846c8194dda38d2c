import type { Router } from 'express';
import { badRequest } from '../../shared/errors.ts';
import type { Store } from '../store/index.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import type { Metrics } from '../metrics.ts';
import { buildShape, workerShape } from './shapes.ts';
import { pagination, queryInt, queryNumber } from './request-values.ts';
import { route, type ApiTree } from './api-tree.ts';

export interface ServiceRoutesDeps {
  readonly store: Store;
  readonly registry: WorkerRegistry;
  readonly metrics: Metrics;
  readonly version: string;
}

export const API_VERSION = 1;

function countWorkers(registry: WorkerRegistry, metrics: Metrics): void {
  const workers = { idle: 0, busy: 0, dead: 0 };
  const executors = { idle: 0, busy: 0 };
  for (const worker of registry.all()) {
    if (!worker.isAlive) {
      workers.dead++;
      continue;
    }
    if (worker.executorsInUse > 0) workers.busy++;
    else workers.idle++;
    executors.busy += worker.executorsInUse;
    executors.idle += worker.freeExecutorCount;
  }
  for (const [state, count] of Object.entries(workers)) metrics.workers.set({ state }, count);
  for (const [state, count] of Object.entries(executors)) metrics.executors.set({ state }, count);
}

export function addServiceRoutes(router: Router, deps: ServiceRoutesDeps, tree: ApiTree): void {
  const { store, registry, metrics } = deps;

  route(router, '/version', {
    get: [(_req, res) => {
      res.json({ version: deps.version, api_version: API_VERSION, child_routes: {} });
    }],
  });

  route(router, '/metrics', {
    get: [async (_req, res) => {
      countWorkers(registry, metrics);
      res.set('Content-Type', metrics.registry.contentType).send(await metrics.registry.metrics());
    }],
  });

  route(router, '/queue', {
    get: [(req, res) => {
      store.batcher.flush();
      let builds = store.builds.listUnfinished();
      if (tree.isPaginated) {
        const { offset, limit } = pagination(req.query);
        builds = builds.slice(offset, offset + limit);
      }
      res.json({
        queue: builds.map((build) => buildShape(build, null, `${tree.prefix}/${tree.build}`)),
        child_routes: { [tree.build]: `${tree.prefix}/${tree.build}/[build_id]` },
      });
    }],
  });

  route(router, '/eventlog', {
    get: [(req, res) => {
      const sinceId = queryInt(req.query, 'since_id');
      const sinceTimestamp = queryNumber(req.query, 'since_timestamp');
      if (sinceId !== undefined && sinceTimestamp !== undefined) throw badRequest('Give since_id or since_timestamp, not both.');
      if (sinceId !== undefined && sinceId < 0) throw badRequest('since_id must be a non-negative integer.');
      const query: { sinceId?: number; sinceTimestamp?: number } = {};
      if (sinceId !== undefined) query.sinceId = sinceId;
      if (sinceTimestamp !== undefined) query.sinceTimestamp = sinceTimestamp;
      res.json({ events: store.events.list(query), child_routes: {} });
    }],
  });
}

/** GET / and GET /v1: the readiness probe. */
export function masterStatus(registry: WorkerRegistry, tree: ApiTree) {
  return {
    master: { status: 'Master service is up.', workers: registry.listed().map(workerShape) },
    child_routes: {
      version: `${tree.prefix}/version`,
      [tree.build]: `${tree.prefix}/${tree.build}`,
      [tree.worker]: `${tree.prefix}/${tree.worker}`,
      queue: `${tree.prefix}/queue`,
      eventlog: `${tree.prefix}/eventlog`,
      metrics: `${tree.prefix}/metrics`,
    },
  };
}
