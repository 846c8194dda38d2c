/**
 * GET /v1/identity?challenge=HEX (issue 10 item 1): the master proves it holds the shared secret by
 * answering HMAC(secret, challenge) for a client's random challenge, without revealing the secret. Local
 * mode asks this before it sends a build or starts a worker for whatever answers on its port, so that
 * another local user who took the port first gets nothing from us.
 */
import type { Router } from 'express';
import { identityResponse } from '../../shared/auth.ts';
import { badRequest } from '../../shared/errors.ts';
import { route } from './api-tree.ts';

/** 16 to 64 random bytes, hex: short enough to bound the work, long enough that answers cannot be collected. */
const CHALLENGE = /^[0-9a-f]{32,128}$/;

export function addIdentityRoutes(router: Router, deps: { readonly secret: string }): void {
  route(router, '/identity', {
    get: [(req, res) => {
      const challenge = req.query['challenge'];
      if (typeof challenge !== 'string' || !CHALLENGE.test(challenge)) {
        throw badRequest('Query parameter challenge must be 32 to 128 lower-case hex digits, given once.');
      }
      res.json({ identity: { challenge, response: identityResponse(deps.secret, challenge) } });
    }],
  });
}
