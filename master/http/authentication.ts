import type { RequestHandler } from 'express';
import { NONCE_HEADER, NonceCache, TIMESTAMP_HEADER, verifyRequest, type NonceBook } from '../../shared/auth.ts';
import { ClusterRunnerError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/log.ts';

const NOT_AUTHENTICATED = 'Message digest does not match header, message not authenticated.';
const MESSAGES: Record<string, string> = {
  missing: NOT_AUTHENTICATED,
  mismatch: NOT_AUTHENTICATED,
  expired: `${NOT_AUTHENTICATED} (The request is too old or its clock is off.)`,
  replayed: `${NOT_AUTHENTICATED} (This request was already received.)`,
};

/** Loggers already warned about accept_legacy_digest: the API and the live pages both build a check. */
const warnedLoggers = new WeakSet<Logger>();

/** How a request proved it knows the secret, remembered so a second check on the same request agrees. */
type Proof = 'signed' | 'legacy';

/**
 * HMAC-SHA512 digest check over the exact raw body (SPEC §1.1), or our clients' signed form over method,
 * path, timestamp, nonce and body. Runs after the raw body has been read, before it is parsed. One nonce
 * book serves every check of a master, so a signed request is accepted once, wherever it is sent.
 */
export function createAuthentication(options: { secret: string; acceptLegacyDigest: boolean; log: Logger; nonces?: NonceBook }): {
  requireDigest: RequestHandler;
  requireSignature: RequestHandler;
} {
  // The master passes its SQLite book (master/store/nonce-store.ts) so a replay after a restart is refused too.
  const nonces = options.nonces ?? new NonceCache();
  if (options.acceptLegacyDigest && !warnedLoggers.has(options.log)) {
    warnedLoggers.add(options.log);
    options.log.warn('accept_legacy_digest is on: a captured unsigned write can be replayed; set it to false once no client of the original remains');
  }
  const check = (needsSignature: boolean): RequestHandler => (req, res, next) => {
    const proven = res.locals['proof'] as Proof | undefined;
    if (proven === 'signed' || (proven === 'legacy' && !needsSignature)) {
      next();
      return;
    }
    const body: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const result = verifyRequest({
      secret: options.secret,
      method: req.method,
      path: req.originalUrl,
      body,
      headers: req.headers,
      acceptLegacyDigest: options.acceptLegacyDigest && !needsSignature,
      nonces,
    });
    if (result !== 'ok') {
      // Enough to tell a wrong secret from a mangled request, and nothing that would help forge one.
      options.log.warn({
        method: req.method, path: req.originalUrl, verdict: result, remote: req.socket.remoteAddress,
        signed: req.headers[TIMESTAMP_HEADER] !== undefined && req.headers[NONCE_HEADER] !== undefined,
        bodyBytes: body.length, contentLength: req.headers['content-length'] ?? null,
      }, 'request refused: not authenticated');
      next(new ClusterRunnerError('NOT_AUTHENTICATED', MESSAGES[result]!, { status: 401 }));
      return;
    }
    const isSigned = req.headers[TIMESTAMP_HEADER] !== undefined && req.headers[NONCE_HEADER] !== undefined;
    res.locals['proof'] = isSigned ? 'signed' : 'legacy';
    next();
  };
  return { requireDigest: check(false), requireSignature: check(true) };
}
