import type { RequestHandler, Router } from 'express';
import { badRequest, notFound } from '../../shared/errors.ts';
import { SHUTDOWN_WORKERS_KEYS, shutdownWorkersRequestSchema } from '../../shared/api/requests.ts';
import type { WorkerEntry, WorkerRegistry } from '../workers/worker-registry.ts';
import { drainWorker } from '../workers/worker-session.ts';
import { workerShape } from './shapes.ts';
import { pagination, pathId } from './request-values.ts';
import { objectBody, parseBody, route, type ApiTree } from './api-tree.ts';

export interface WorkerRoutesDeps {
  readonly registry: WorkerRegistry;
  readonly requireDigest: RequestHandler;
  /** Told when an operator clears a suspect worker, so it is given work again (BuildManager.healthChanged). */
  readonly healthCleared?: (worker: WorkerEntry) => void;
}

export function addWorkerRoutes(router: Router, deps: WorkerRoutesDeps, tree: ApiTree): void {
  const { registry } = deps;
  // `slave` is the original's word; every path and key accepts it.
  for (const [noun, listKey] of [[tree.worker, 'workers'], [tree.slave, 'slaves']] as const) {
    const singular = listKey.slice(0, -1);
    const find = (raw: string | string[] | undefined): WorkerEntry => {
      const id = pathId(raw, singular);
      const worker = registry.get(id);
      if (!worker || worker.isDraining) throw notFound(`Invalid ${singular} id: ${id}.`);
      return worker;
    };

    route(router, `/${noun}`, {
      get: [(req, res) => {
        let workers = registry.listed().map(workerShape);
        if (tree.isPaginated) {
          const { offset, limit } = pagination(req.query);
          workers = workers.slice(offset, offset + limit);
        }
        res.json({ [listKey]: workers, child_routes: { [singular]: `${tree.prefix}/${noun}/[${singular}_id]` } });
      }],
    });

    route(router, `/${noun}/shutdown`, {
      post: [deps.requireDigest, (req, res) => {
        const body = parseBody(req, SHUTDOWN_WORKERS_KEYS, shutdownWorkersRequestSchema);
        // Every id is checked before any worker is touched: all or nothing.
        const targets: WorkerEntry[] = 'shutdown_all' in body
          ? registry.listed()
          : ('workers' in body ? body.workers : body.slaves).map((id) => find(String(id)));
        for (const worker of targets) drainWorker(worker);
        res.json({ STATUS: 'SUCCESS', [listKey]: targets.map((worker) => worker.id) });
      }],
    });

    route(router, `/${noun}/:workerId`, {
      get: [(req, res) => {
        res.json({
          [singular]: workerShape(find(req.params['workerId'])),
          child_routes: { shutdown: `${tree.prefix}/${noun}/[${singular}_id]/shutdown` },
        });
      }],
      // SPEC §15: an operator clears a worker made suspect by its failures; only "healthy" may be set.
      put: [deps.requireDigest, (req, res) => {
        const body = objectBody(req, ['health']);
        if (body['health'] !== 'healthy') throw badRequest(`Field health must be "healthy", not ${JSON.stringify(body['health'] ?? null)}.`);
        const worker = find(req.params['workerId']);
        const wasSuspect = worker.failureSuspicion !== null;
        worker.failureSuspicion = null;
        worker.failuresPassedElsewhere = 0;
        if (wasSuspect) deps.healthCleared?.(worker);
        res.json({ [singular]: workerShape(worker) });
      }],
    });

    route(router, `/${noun}/:workerId/shutdown`, {
      post: [deps.requireDigest, (req, res) => {
        objectBody(req, []);
        const worker = find(req.params['workerId']);
        drainWorker(worker);
        res.json({ STATUS: 'SUCCESS', [`${singular}_id`]: worker.id });
      }],
    });
  }
}
