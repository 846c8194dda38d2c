import type { RequestHandler } from 'express';
import { NonceCache, verifyRequest } from '../../shared/auth.ts';
import { ClusterRunnerError } from '../../shared/errors.ts';

const MESSAGES: Record<string, string> = {
  missing: 'Message digest does not match header, message not authenticated.',
  mismatch: 'Message digest does not match header, message not authenticated.',
  expired: 'Message digest does not match header, message not authenticated. (The request is too old or its clock is off.)',
  replayed: 'Message digest does not match header, message not authenticated. (This request was already received.)',
};

/**
 * HMAC-SHA512 digest check over the exact raw body (SPEC §1.1), or our clients' signed form over method,
 * path, timestamp, nonce and body. Runs after the raw body has been read, before it is parsed.
 */
export function requireDigest(options: { secret: string; acceptLegacyDigest: boolean }): RequestHandler {
  const nonces = new NonceCache();
  return (req, _res, next) => {
    const body: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const result = verifyRequest({
      secret: options.secret,
      method: req.method,
      path: req.originalUrl,
      body,
      headers: req.headers,
      acceptLegacyDigest: options.acceptLegacyDigest,
      nonces,
    });
    if (result === 'ok') next();
    else next(new ClusterRunnerError('NOT_AUTHENTICATED', MESSAGES[result]!, { status: 401 }));
  };
}
