import type { Request, RequestHandler, Router } from 'express';
import { badRequest } from '../../shared/errors.ts';
import { methodNotAllowed } from './http-errors.ts';

/**
 * The three trees of SPEC §1 share their handlers: v1 and the unversioned tree use singular names, v2 uses
 * plural names and paginates its lists.
 */
export interface ApiTree {
  /** The prefix links are built with: '/v1' for both v1 and the unversioned tree, '/v2' for v2. */
  readonly prefix: string;
  readonly isPaginated: boolean;
  readonly build: string;
  readonly subjob: string;
  readonly atom: string;
  readonly worker: string;
  readonly slave: string;
}

export const V1_TREE: ApiTree = { prefix: '/v1', isPaginated: false, build: 'build', subjob: 'subjob', atom: 'atom', worker: 'worker', slave: 'slave' };
export const V2_TREE: ApiTree = { prefix: '/v2', isPaginated: true, build: 'builds', subjob: 'subjobs', atom: 'atoms', worker: 'workers', slave: 'slaves' };

type Method = 'get' | 'post' | 'put';

/** Registers a path with its methods; any other method on it answers 405 instead of falling through to 404. */
export function route(router: Router, path: string, handlers: Partial<Record<Method, RequestHandler[]>>): void {
  const r = router.route(path);
  for (const [method, chain] of Object.entries(handlers) as [Method, RequestHandler[]][]) r[method](...chain);
  r.all(methodNotAllowed);
}

/** The raw body (read by the body parser so the digest covers its exact bytes) parsed as JSON. */
export function jsonBody(req: Request): unknown {
  const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  if (raw.length === 0) return {};
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch {
    throw badRequest('The request body is not valid JSON.');
  }
}

/** Refuses any key but the known ones, naming it (SPEC §1: unknown keys get 400). */
export function objectBody(req: Request, known: readonly string[]): Record<string, unknown> {
  const body = jsonBody(req);
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('The request body must be a JSON object.');
  for (const key of Object.keys(body)) {
    if (!known.includes(key)) throw badRequest(`Unknown parameter "${key}". Known parameters: ${known.join(', ') || 'none'}.`);
  }
  return body as Record<string, unknown>;
}
