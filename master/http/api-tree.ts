import type { Request, RequestHandler, Router } from 'express';
import type { z } from 'zod';
import { badRequest } from '../../shared/errors.ts';
import { unreadableRequest } from '../../shared/api/error-codes.ts';
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
  const methods = Object.entries(handlers) as [Method, RequestHandler[]][];
  for (const [method, chain] of methods) r[method](...chain);
  r.all(methodNotAllowed(methods.map(([method]) => method)));
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The raw body (read by the body parser so the digest covers its exact bytes) parsed as JSON. */
export function jsonBody(req: Request): unknown {
  const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  if (raw.length === 0) return {};
  let text: string;
  try {
    // Fatal: bytes that are not UTF-8 would otherwise become U+FFFD and slip into names and commands.
    text = UTF8.decode(raw);
  } catch {
    throw unreadableRequest('The request body is not valid UTF-8.');
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw unreadableRequest('The request body is not valid JSON.');
  }
  if (nestingDepth(body) > MAX_JSON_DEPTH) throw unreadableRequest(`The request body is nested more than ${MAX_JSON_DEPTH} levels deep.`);
  return body;
}

/** Deeper than any honest request; recursive code further on (validation, JSON output) must never overflow. */
export const MAX_JSON_DEPTH = 64;

/** Measured without recursion, so a hostile body cannot overflow the stack here either. */
function nestingDepth(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (typeof item !== 'object' || item === null) continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > MAX_JSON_DEPTH) return deepest;
    for (const child of Object.values(item)) stack.push([child, depth + 1]);
  }
  return deepest;
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

/** objectBody, then the body's schema from shared/api/requests.ts; a failure names the field. */
export function parseBody<T extends z.ZodType>(req: Request, known: readonly string[], schema: T): z.output<T> {
  const parsed = schema.safeParse(objectBody(req, known));
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw badRequest(issue.path.length === 0 || issue.message.startsWith('"') || issue.message.startsWith('The ') || issue.message.startsWith('Give ')
    ? issue.message
    : `"${issue.path.join('.')}": ${issue.message}`);
}
