import type { RequestHandler, Router } from 'express';
import { z } from 'zod';
import { notFound } from '../../shared/errors.ts';
import type { PoolManager } from '../pools/pool-manager.ts';
import { parseBody, route, type ApiTree } from './api-tree.ts';

export interface PoolRoutesDeps {
  /** current is null when the master has no pools: the list is empty and every name is unknown. */
  readonly pools: { readonly current: PoolManager | null };
  readonly requireDigest: RequestHandler;
}

const RESIZE_KEYS = ['min_workers', 'max_workers', 'reset'] as const;
const size = z.number({ error: 'must be an integer from 0 to 1000' }).int('must be an integer from 0 to 1000').min(0, 'must be an integer from 0 to 1000').max(1000, 'must be an integer from 0 to 1000');
// A size holds across restarts until {"reset": true} or an edit of the pool's sizes in the conf (pool-manager.ts).
const resizeSchema = z.strictObject({ min_workers: size.optional(), max_workers: size.optional(), reset: z.literal(true, { error: 'must be true' }).optional() })
  .refine((body) => body.reset === undefined || (body.min_workers === undefined && body.max_workers === undefined),
    { message: '"reset" goes alone: it restores the conf\'s "min_workers" and "max_workers".' })
  .refine((body) => body.reset !== undefined || body.min_workers !== undefined || body.max_workers !== undefined,
    { message: 'Give "min_workers", "max_workers", both, or "reset": true.' });

/** SPEC §13: the pools, their desired sizes (for external autoscalers) and live resizing. v2 only. */
export function addPoolRoutes(router: Router, deps: PoolRoutesDeps, tree: ApiTree): void {
  const find = (name: string | string[] | undefined) => {
    const text = typeof name === 'string' ? name : '';
    const view = deps.pools.current?.view(text) ?? null;
    if (view === null) throw notFound(`Invalid pool name: ${JSON.stringify(text).slice(0, 200)}.`);
    return view;
  };
  route(router, '/pools', {
    get: [(_req, res) => {
      const manager = deps.pools.current;
      const pools = manager ? manager.names().map((name) => manager.view(name)!) : [];
      res.json({ pools, child_routes: { pool: `${tree.prefix}/pools/[pool_name]`, desired: `${tree.prefix}/pools/[pool_name]/desired` } });
    }],
  });
  route(router, '/pools/:name', {
    get: [(req, res) => {
      res.json({ pool: find(req.params['name']), child_routes: { desired: `${tree.prefix}/pools/[pool_name]/desired` } });
    }],
    put: [deps.requireDigest, (req, res) => {
      find(req.params['name']);
      const body = parseBody(req, RESIZE_KEYS, resizeSchema);
      const pool = deps.pools.current!.resize(req.params['name'] as string, body);
      res.json({ STATUS: 'SUCCESS', pool });
    }],
  });
  route(router, '/pools/:name/desired', {
    get: [(req, res) => {
      res.json({ desired_workers: find(req.params['name']).desired_workers });
    }],
  });
}
