import type { Request, RequestHandler } from 'express';

/**
 * Request bodies as the original's clients send them, made into the form our validation expects, in both
 * modes: `null` for an optional build field means absent (the original client sends `"job_name": null`
 * whenever -j is left out), and worker ids may be digit strings (`shutdown -s 1` sends `{"slaves": ["1"]}`).
 *
 * The digest covers the bytes as sent, so the request is authenticated first (the route's own check then
 * sees it proven); a body that is not a JSON object is left for the route to refuse with its usual message.
 */

/** POST paths after version negotiation: v1, the unversioned tree (v1) and v2. */
const BUILD_COLLECTION = /^\/(?:v1\/|v2\/)?builds?\/?$/;
const WORKERS_SHUTDOWN = /^\/(?:v1\/|v2\/)?(?:workers?|slaves?)\/shutdown\/?$/;
const DIGIT_STRING = /^\d{1,15}$/;

type Json = Record<string, unknown>;

/** Drops top-level `null` values: every field of a build request is optional or required, never nullable. */
export function normaliseBuildRequest(body: Json): Json | null {
  if (!Object.values(body).includes(null)) return null;
  return Object.fromEntries(Object.entries(body).filter(([, value]) => value !== null));
}

/** `["1", 2]` becomes `[1, 2]`; anything else is left for the route to refuse. */
export function normaliseShutdownRequest(body: Json): Json | null {
  let changed = false;
  const out: Json = { ...body };
  for (const key of ['workers', 'slaves']) {
    const ids = body[key];
    if (!Array.isArray(ids) || !ids.some((id) => typeof id === 'string' && DIGIT_STRING.test(id))) continue;
    out[key] = ids.map((id: unknown) => (typeof id === 'string' && DIGIT_STRING.test(id) ? Number(id) : id));
    changed = true;
  }
  return changed ? out : null;
}

// Fatal, as the routes decode: a body that is not UTF-8 must reach them as sent, to be refused there.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function readObject(req: Request): Json | null {
  if (!Buffer.isBuffer(req.body) || req.body.length === 0) return null;
  try {
    const parsed: unknown = JSON.parse(UTF8.decode(req.body));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Json) : null;
  } catch {
    return null;
  }
}

export function normaliseOriginalRequests(requireDigest: RequestHandler): RequestHandler {
  return (req, res, next) => {
    if (req.method !== 'POST') return next();
    const normalise = BUILD_COLLECTION.test(req.path) ? normaliseBuildRequest
      : WORKERS_SHUTDOWN.test(req.path) ? normaliseShutdownRequest : null;
    if (normalise === null) return next();
    void requireDigest(req, res, (error?: unknown) => {
      if (error !== undefined) return next(error);
      const body = readObject(req);
      const normalised = body === null ? null : normalise(body);
      if (normalised !== null) {
        try {
          req.body = Buffer.from(JSON.stringify(normalised), 'utf8');
        } catch {
          // Too deep to serialise again: leave the body as sent, the route refuses it by its depth limit.
        }
      }
      next();
    });
  };
}
