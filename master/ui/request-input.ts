import type { Request, RequestHandler, Router } from 'express';
import { ClusterRunnerError, badRequest } from '../../shared/errors.ts';

/**
 * The few request helpers the dashboard's routes need, kept here so master/ui does not import master/http
 * (which mounts it): the folder graph stays free of cycles.
 */

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The raw body (read by the app's body parser) as a JSON object with only the known keys, naming any other. */
export function objectBody(req: Request, known: readonly string[]): Record<string, unknown> {
  const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  if (raw.length === 0) return {};
  let body: unknown;
  try {
    body = JSON.parse(UTF8.decode(raw));
  } catch {
    throw badRequest('The request body is not valid UTF-8 JSON.');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('The request body must be a JSON object.');
  for (const key of Object.keys(body)) {
    if (!known.includes(key)) throw badRequest(`Unknown parameter "${key.slice(0, 64)}". Known parameters: ${known.join(', ') || 'none'}.`);
  }
  return body as Record<string, unknown>;
}

export function pathId(raw: string | string[] | undefined, what: string): number {
  const value = Array.isArray(raw) ? raw.join('/') : raw;
  if (value === undefined || !/^\d{1,15}$/.test(value)) throw badRequest(`The ${what} id must be a non-negative integer, not ${JSON.stringify((value ?? '').slice(0, 64))}.`);
  return Number(value);
}

/** Registers a path with its methods; any other method answers 405 naming the allowed ones (SPEC §1). */
export function route(router: Router, path: string, handlers: Partial<Record<'get' | 'post', RequestHandler[]>>): void {
  const r = router.route(path);
  const methods = Object.entries(handlers) as ['get' | 'post', RequestHandler[]][];
  for (const [method, chain] of methods) r[method](...chain);
  const allow = methods.map(([method]) => method.toUpperCase()).join(', ');
  r.all((req, res, next) => {
    res.set('Allow', allow);
    next(new ClusterRunnerError('METHOD_NOT_ALLOWED', `Method ${req.method} is not allowed on ${req.originalUrl.split('?')[0]}; use ${allow}.`, { status: 405 }));
  });
}
