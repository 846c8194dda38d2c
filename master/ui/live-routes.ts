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

export interface LiveRoutesDeps {
  readonly store: Store;
  readonly manager: BuildManager;
  readonly layout: ResultsLayout;
  readonly log: Logger;
  readonly secret: string;
  readonly authenticateReads: boolean;
  /** The API's digest check (master/http/authentication.ts), shared so one nonce cache sees every request. */
  readonly requireDigest: RequestHandler;
  readonly eventLimits?: Partial<EventHubLimits>;
}

/** Sign-in attempts per client address per minute (the secret must not be guessable by trying). */
export const SIGN_IN_ATTEMPTS_PER_MINUTE = 5;

/** Every byte the pages load comes from the master; nothing inline, so injected markup cannot run. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
  "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

const STATIC_DIR = fileURLToPath(new URL('./static/', import.meta.url));

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

  router.get('/ui', (req, res, next) => (req.originalUrl === '/ui' ? res.redirect(301, '/ui/') : next()));
  router.use('/ui', express.static(STATIC_DIR, { index: 'index.html', fallthrough: true, dotfiles: 'deny', redirect: false }));
  return router;
}
