import express, { type RequestHandler, type Router } from 'express';
import { fileURLToPath } from 'node:url';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { ClusterRunnerError, badRequest, notFound } from '../../shared/errors.ts';
import type { Logger } from '../../shared/log.ts';
import type { Store } from '../store/index.ts';
import type { ResultsLayout } from '../builds/results-layout.ts';
import type { BuildManager } from '../builds/build-manager.ts';
import { objectBody, pathId, route } from './request-input.ts';
import { EventHub, type EventHubLimits } from '../events/event-hub.ts';
import { parseStreamFilter } from '../events/stream-filter.ts';
import { OperatorSessions, SESSION_COOKIE, SESSION_TTL_MS } from './operator-sessions.ts';
import type { PoolManager } from '../pools/pool-manager.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import { createBuildQuery } from '../store/build-query.ts';
import { parseBuildSearch } from '../../shared/api/build-search.ts';
import { BUILDS_PAGE_SIZE, buildPage, buildsPage, signInRequiredPage, workersPage, type AtomFilter, type PageContext, type Viewer } from './pages.ts';
import type { SafeHtml } from './html.ts';

export interface LiveRoutesDeps {
  readonly store: Store;
  readonly manager: BuildManager;
  readonly layout: ResultsLayout;
  readonly registry: WorkerRegistry;
  readonly log: Logger;
  readonly secret: string;
  readonly authenticateReads: boolean;
  /** The API's digest check (master/http/authentication.ts), shared so one nonce cache sees every request. */
  readonly requireDigest: RequestHandler;
  readonly eventLimits?: Partial<EventHubLimits>;
  /** The master's pools, for the workers page (SPEC §13). */
  readonly pools?: { readonly current: PoolManager | null } | undefined;
}

/** Sign-in attempts per client address per minute (the secret must not be guessable by trying). */
export const SIGN_IN_ATTEMPTS_PER_MINUTE = 5;

/** Every byte the pages load comes from the master; nothing inline, so injected markup cannot run. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
  "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

const STATIC_DIR = fileURLToPath(new URL('./static/', import.meta.url));
/** Offsets past this page nothing anyone reads; the bound keeps OFFSET scans short. */
const MAX_OFFSET = 10_000_000;
const MAX_QUERY_CHARS = 1024;

/** One query parameter given at most once, as text of at most MAX_QUERY_CHARS; refused by name otherwise. */
function queryText(req: express.Request, name: string): string | undefined {
  const value = req.query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badRequest(`Query parameter ${name} must be given once, as a single value.`);
  if (value.length > MAX_QUERY_CHARS) throw badRequest(`Query parameter ${name} is longer than ${MAX_QUERY_CHARS} characters.`);
  return value;
}

function queryOffset(req: express.Request): number {
  const text = queryText(req, 'offset');
  if (text === undefined || text === '') return 0;
  if (!/^\d{1,8}$/.test(text) || Number(text) > MAX_OFFSET) throw badRequest(`Query parameter offset must be a whole number from 0 to ${MAX_OFFSET}, not ${JSON.stringify(text.slice(0, 40))}.`);
  return Number(text);
}

function refuseUnknownQuery(req: express.Request, known: readonly string[]): void {
  for (const key of Object.keys(req.query)) {
    if (!known.includes(key)) throw badRequest(`Unknown query parameter "${key.slice(0, 64)}". Known parameters: ${known.join(', ') || 'none'}.`);
  }
}

/**
 * The event stream (GET /v2/events) and the dashboard (/ui/, SPEC §14). Mounted before the API's read
 * authentication: a dashboard session counts as authenticated for reads, so a signed-in operator can read
 * when `authenticate_reads` is on; API clients still sign their requests.
 */
export function createLiveRoutes(deps: LiveRoutesDeps): Router {
  const router = express.Router({ strict: false });
  const hub = new EventHub({ store: deps.store, layout: deps.layout, log: deps.log.child({ component: 'events' }), limits: deps.eventLimits ?? {} });
  const sessions = new OperatorSessions(deps.secret);
  const { requireDigest } = deps;
  const signInLimiter = new RateLimiterMemory({ points: SIGN_IN_ATTEMPTS_PER_MINUTE, duration: 60 });

  // The API's digest check (master/http/authentication.ts) accepts a request already proven this way;
  // reads only: a change from the dashboard goes through the CSRF-checked routes below.
  router.use((req, res, next) => {
    if ((req.method === 'GET' || req.method === 'HEAD') && sessions.find(req)) res.locals['proof'] = 'legacy';
    next();
  });

  const requireRead: express.RequestHandler = (req, res, next) => {
    if (!deps.authenticateReads || res.locals['proof'] !== undefined) next();
    else requireDigest(req, res, next);
  };

  const requireOperator: express.RequestHandler = (req, _res, next) => {
    if (!sessions.isCsrfValid(req)) {
      next(new ClusterRunnerError('NOT_AUTHENTICATED', 'Sign in as an operator first (the session or its CSRF token is missing or expired).', { status: 401 }));
      return;
    }
    next();
  };

  route(router, '/v2/events', {
    get: [requireRead, (req, res) => hub.open(req, res, parseStreamFilter(req))],
  });

  router.use('/ui', (_req, res, next) => {
    res.set({
      'Content-Security-Policy': CONTENT_SECURITY_POLICY,
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'X-Frame-Options': 'DENY',
      'Cache-Control': 'no-store',
    });
    next();
  });

  route(router, '/ui/api/session', {
    get: [(req, res) => {
      const session = sessions.find(req);
      res.json({ signed_in: session !== null, csrf_token: session?.csrfToken ?? null, authenticate_reads: deps.authenticateReads });
    }],
  });

  route(router, '/ui/api/sign-in', {
    post: [async (req, res) => {
      try {
        await signInLimiter.consume(req.socket.remoteAddress ?? 'unknown');
      } catch (rejection) {
        if (!(rejection instanceof RateLimiterRes)) throw rejection;
        res.set('Retry-After', String(Math.ceil(rejection.msBeforeNext / 1000)));
        throw new ClusterRunnerError('RATE_LIMITED', `Too many sign-in attempts from this address; try again in ${Math.ceil(rejection.msBeforeNext / 1000)} s.`, { status: 429 });
      }
      const body = objectBody(req, ['secret']);
      if (typeof body['secret'] !== 'string' || body['secret'].length === 0 || body['secret'].length > 1024) {
        throw badRequest('secret must be a non-empty string of at most 1024 characters.');
      }
      if (!sessions.isSecret(body['secret'])) {
        deps.log.warn({ remote: req.socket.remoteAddress }, 'dashboard sign-in refused: wrong secret');
        throw new ClusterRunnerError('NOT_AUTHENTICATED', 'That is not the master\'s secret.', { status: 401 });
      }
      const session = sessions.create();
      res.cookie(SESSION_COOKIE, session.id, {
        httpOnly: true, sameSite: 'strict', secure: req.secure, path: '/', maxAge: SESSION_TTL_MS,
      });
      res.json({ signed_in: true, csrf_token: session.csrfToken, STATUS: 'SUCCESS' });
    }],
  });

  route(router, '/ui/api/sign-out', {
    post: [requireOperator, (req, res) => {
      sessions.end(req);
      res.clearCookie(SESSION_COOKIE, { path: '/' });
      res.json({ signed_in: false, STATUS: 'SUCCESS' });
    }],
  });

  route(router, '/ui/api/builds/:buildId/cancel', {
    post: [requireOperator, async (req, res) => {
      objectBody(req, []);
      const id = pathId(req.params['buildId'], 'build');
      if (!deps.store.builds.get(id)) throw notFound(`Invalid build id: ${id}.`);
      await deps.manager.cancel(id);
      res.json({ build_id: id, STATUS: 'SUCCESS' });
    }],
  });

  route(router, '/ui/api/builds/:buildId/retry', {
    post: [requireOperator, async (req, res) => {
      objectBody(req, []);
      const id = pathId(req.params['buildId'], 'build');
      const retried = await deps.manager.retry(id, null);
      res.status(202).json({ build_id: id, num_atoms_retried: retried, STATUS: 'SUCCESS' });
    }],
  });

  // The pages, rendered here (master/ui/pages.ts); static/live.js keeps them current from the stream.
  const ctx: PageContext = { store: deps.store, query: createBuildQuery(deps.store.db), layout: deps.layout, registry: deps.registry, pools: deps.pools };
  const viewerOf = (req: express.Request): Viewer => ({ csrfToken: sessions.find(req)?.csrfToken ?? null });
  const send = (res: express.Response, body: SafeHtml, status = 200) => {
    res.status(status).type('text/html; charset=utf-8').send(body.text);
  };
  /** With authenticate_reads, a visitor who has not signed in sees only the sign-in form. */
  const mayRead = (req: express.Request, res: express.Response, viewer: Viewer): boolean => {
    if (!deps.authenticateReads || viewer.csrfToken !== null) return true;
    send(res, signInRequiredPage(viewer), 401);
    return false;
  };

  router.get('/ui', (req, res, next) => (req.originalUrl === '/ui' ? res.redirect(301, '/ui/') : next()));
  route(router, '/ui/', {
    get: [(req, res) => {
      refuseUnknownQuery(req, ['q', 'offset']);
      const viewer = viewerOf(req);
      if (!mayRead(req, res, viewer)) return;
      const q = queryText(req, 'q') ?? '';
      const offset = queryOffset(req);
      let found: { ids: number[]; total: number } = { ids: [], total: 0 };
      let error: string | null = null;
      try {
        const search = parseBuildSearch(q);
        deps.store.batcher.flush();
        found = ctx.query.list(search.length === 0 ? {} : { search }, { order: 'desc', offset, limit: BUILDS_PAGE_SIZE });
      } catch (problem) {
        if (!(problem instanceof ClusterRunnerError) || problem.status !== 400) throw problem;
        error = problem.message.replace(/^Query parameter q: /, 'Search: ');
      }
      send(res, buildsPage(ctx, viewer, { q, offset, ids: found.ids, total: found.total, error }), error === null ? 200 : 400);
    }],
  });

  route(router, '/ui/builds/:buildId', {
    get: [async (req, res) => {
      refuseUnknownQuery(req, ['atoms', 'offset']);
      const viewer = viewerOf(req);
      if (!mayRead(req, res, viewer)) return;
      const id = pathId(req.params['buildId'], 'build');
      const filter = queryText(req, 'atoms') ?? 'all';
      if (filter !== 'all' && filter !== 'failed' && filter !== 'running') throw badRequest(`Query parameter atoms must be all, failed or running, not ${JSON.stringify(filter.slice(0, 40))}.`);
      deps.store.batcher.flush();
      const build = deps.store.builds.get(id);
      if (!build) throw notFound(`Invalid build id: ${id}.`);
      send(res, await buildPage(ctx, viewer, { build, atomsOffset: queryOffset(req), atomFilter: filter as AtomFilter }));
    }],
  });

  route(router, '/ui/workers', {
    get: [(req, res) => {
      refuseUnknownQuery(req, []);
      const viewer = viewerOf(req);
      if (!mayRead(req, res, viewer)) return;
      send(res, workersPage(ctx, viewer));
    }],
  });

  router.use('/ui/static', express.static(STATIC_DIR, { index: false, fallthrough: true, dotfiles: 'deny', redirect: false }));
  return router;
}
