import type { RequestHandler } from 'express';
import type { Compatibility } from './compatibility-mode.ts';

/**
 * Which API version a request asks for, as the original resolved it: an `Accept` media type
 * `application/vnd.clusterrunner.vN+json` wins; otherwise the path decides. The original served its v2 tree
 * unversioned (`/builds`, `/slaves`, `/version`); ours lives under `/v2`, and the unversioned tree stays v1
 * (SPEC §1) except for the paths v1 does not have. Under `compatibility = original`, `/version` is v2 too.
 */
export type ApiVersion = 1 | 2;

const ACCEPT_VERSION = /application\/vnd\.clusterrunner\.v(\d+)\+json/i;
/** First path segments only the v2 tree has: served as v2 whatever the mode. */
const V2_ONLY_ROOTS = new Set(['builds', 'slaves', 'workers']);
/** v1's singular segments and their v2 names; ids and other segments are the same in both trees. */
const V2_NAMES: Readonly<Record<string, string>> = { build: 'builds', subjob: 'subjobs', atom: 'atoms', worker: 'workers', slave: 'slaves' };

export function acceptedVersion(accept: string | undefined): ApiVersion | null {
  const match = accept === undefined ? null : ACCEPT_VERSION.exec(accept);
  if (match === null) return null;
  const version = Number(match[1]);
  return version === 1 || version === 2 ? version : null;
}

/**
 * The path to route a request to, and the version it is answered in. Only upgrades to v2 are rewritten:
 * a v1 request to a v2 path (`Accept: ...v1+json` on `/v2/builds`) keeps the v2 tree, as in the original.
 */
export function resolveApiRoute(path: string, accept: string | undefined, mode: Compatibility): { path: string; version: ApiVersion } {
  const segments = path.split('/');
  const first = segments[1] ?? '';
  if (first === 'v2') return { path, version: acceptedVersion(accept) ?? 2 };
  const isV1 = first === 'v1';
  const rest = isV1 ? segments.slice(2) : segments.slice(1);
  // Paths only the v2 tree has are served by it whatever version is asked for.
  const isOnlyInV2 = !isV1 && V2_ONLY_ROOTS.has(first);
  const isUnversionedV2 = isOnlyInV2 || (!isV1 && mode === 'original' && first === 'version' && rest.length === 1);
  const version = acceptedVersion(accept) ?? (isUnversionedV2 ? 2 : 1);
  if (version === 1 && !isOnlyInV2) return { path, version };
  const v2Rest = rest.map((segment) => V2_NAMES[segment] ?? segment);
  return { path: ['', 'v2', ...v2Rest].join('/').replace(/\/$/, '') || '/v2', version };
}

/**
 * Routes each request to the tree of the version it asks for (rewriting `req.url`; `req.originalUrl`, which
 * signatures cover, is left as sent) and says that version in `Api-Version`. The header is set as the
 * headers go out, so that it holds for every answer, whichever middleware wrote the first value.
 */
export function negotiateApiVersion(mode: Compatibility): RequestHandler {
  return (req, res, next) => {
    const queryAt = req.url.indexOf('?');
    const path = queryAt === -1 ? req.url : req.url.slice(0, queryAt);
    const resolved = resolveApiRoute(path, req.headers.accept, mode);
    if (resolved.path !== path) req.url = resolved.path + (queryAt === -1 ? '' : req.url.slice(queryAt));
    res.locals['apiVersion'] = resolved.version;
    const writeHead = res.writeHead;
    res.writeHead = function (this: typeof res, ...args: Parameters<typeof writeHead>) {
      if (!this.headersSent) this.setHeader('Api-Version', String(resolved.version));
      return writeHead.apply(this, args);
    } as typeof writeHead;
    next();
  };
}
