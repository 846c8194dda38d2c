import express, { type Express, type RequestHandler } from 'express';
import type { Logger } from '../../shared/log.ts';
import { ClusterRunnerError } from '../../shared/errors.ts';
import type { Store } from '../store/index.ts';
import type { BuildManager } from '../builds/build-manager.ts';
import type { ResultsLayout } from '../builds/results-layout.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import type { Metrics } from '../metrics.ts';
import type { NonceBook } from '../../shared/auth.ts';
import { createAuthentication } from './authentication.ts';
import { maskSecretInAnswers } from './answer-mask.ts';
import { errorHandler, notFoundHandler } from './http-errors.ts';
import { V1_TREE, V2_TREE, route, type ApiTree } from './api-tree.ts';
import { addBuildRoutes } from './builds-routes.ts';
import { addRetryRoutes } from './retry-routes.ts';
import { addWorkerRoutes } from './workers-routes.ts';
import { addIdentityRoutes } from './identity-routes.ts';
import { addSearchRoutes } from './search-routes.ts';
import { addAttachmentRoutes } from './attachments-routes.ts';
import { addTestRoutes } from './tests-routes.ts';
import { addFlakyRoutes } from './flaky-routes.ts';
import { API_VERSION, addServiceRoutes, masterStatus } from './service-routes.ts';
import { addCompatibility, normaliseOriginalRequests, type Compatibility } from './compat/compatibility.ts';
import { createLiveRoutes } from '../ui/live-routes.ts';
import { addPoolRoutes } from './pools-routes.ts';
import type { PoolManager } from '../pools/pool-manager.ts';

export interface AppDeps {
  readonly store: Store;
  readonly manager: BuildManager;
  readonly registry: WorkerRegistry;
  readonly layout: ResultsLayout;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly sessionId: string;
  readonly version: string;
  readonly secret: string;
  readonly maxBodyBytes: number;
  readonly authenticateReads: boolean;
  readonly acceptLegacyDigest: boolean;
  /** `[master] compatibility` (issue 17); default 'default'. */
  readonly compatibility?: Compatibility;
  /** Nonces of accepted signed requests; the master's persist in SQLite (issue 10, item 13). */
  readonly nonces?: NonceBook;
  /** The master's pools (SPEC §13); GET /v2/pools lists none without it. Set once the port is known. */
  readonly pools?: { current: PoolManager | null };
}

function createTree(deps: AppDeps, tree: ApiTree, digest: RequestHandler, signature: RequestHandler): express.Router {
  const router = express.Router({ strict: false });
  route(router, '/', { get: [(_req, res) => res.json(masterStatus(deps.registry, tree))] });
  addServiceRoutes(router, deps, tree);
  if (tree.isPaginated) {
    addPoolRoutes(router, { pools: deps.pools ?? { current: null }, requireDigest: digest }, tree); // SPEC §13 (pools-routes.ts)
    // Before the build routes: /v2/builds/latest is not a build id (SPEC §11, §12).
    addSearchRoutes(router, { store: deps.store, manager: deps.manager }, tree);
    addAttachmentRoutes(router, { store: deps.store, layout: deps.layout }, tree);
    addTestRoutes(router, { store: deps.store }, tree); // SPEC §15: tests and plans (tests-routes.ts)
    addFlakyRoutes(router, { store: deps.store }, tree); // SPEC §15: GET /v2/flaky (flaky-routes.ts)
  }
  addRetryRoutes(router, { store: deps.store, manager: deps.manager, layout: deps.layout, requireDigest: digest }, tree); // SPEC §10
  addBuildRoutes(router, { store: deps.store, manager: deps.manager, layout: deps.layout, requireDigest: digest, requireSignature: signature }, tree);
  addWorkerRoutes(router, { registry: deps.registry, requireDigest: digest, healthCleared: (worker) => deps.manager.suspicionCleared(worker) }, tree);
  addIdentityRoutes(router, { secret: deps.secret });
  return router;
}

/** The master's HTTP API (SPEC §1–§2): v1, the unversioned tree (same as v1) and v2. */
export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  addCompatibility(app, deps.compatibility ?? 'default');

  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.set({ 'Api-Version': String(API_VERSION), 'Session-Id': deps.sessionId });
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const routePath = (req.route as { path?: string } | undefined)?.path ?? 'unmatched';
      deps.metrics.httpDuration.observe({ method: req.method, route: `${req.baseUrl}${routePath}`, status: String(res.statusCode) }, seconds);
    });
    const expected = req.headers['expected-session-id'];
    if (expected !== undefined && expected !== deps.sessionId) {
      next(new ClusterRunnerError('SESSION_EXPIRED', `The master was restarted: session ${String(expected)} has expired (current: ${deps.sessionId}).`, { status: 412 }));
      return;
    }
    next();
  });

  app.use(maskSecretInAnswers(deps.secret));

  // Read the raw bytes (bounded) so the digest covers exactly what was sent; routes parse JSON themselves.
  app.use(express.raw({ type: () => true, limit: deps.maxBodyBytes }));

  const { requireDigest: digest, requireSignature: signature } = createAuthentication({
    secret: deps.secret, acceptLegacyDigest: deps.acceptLegacyDigest, log: deps.log, ...(deps.nonces ? { nonces: deps.nonces } : {}),
  });
  app.use(createLiveRoutes({ ...deps, requireDigest: digest })); // GET /v2/events and the dashboard /ui/ (master/ui/live-routes.ts)
  if (deps.authenticateReads) {
    app.use((req, res, next) => (req.method === 'GET' || req.method === 'HEAD' ? digest(req, res, next) : next()));
  }

  app.use(normaliseOriginalRequests(digest));
  app.use('/v2', createTree(deps, V2_TREE, digest, signature));
  app.use('/v1', createTree(deps, V1_TREE, digest, signature));
  app.use('/', createTree(deps, V1_TREE, digest, signature));
  app.use(notFoundHandler);
  app.use(errorHandler(deps.log));
  return app;
}
