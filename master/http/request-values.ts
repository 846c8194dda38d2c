import { badRequest, notFound } from '../../shared/errors.ts';
import type { Store } from '../store/index.ts';
import type { BuildRecord } from '../store/build-store.ts';

/** Path and query values arrive as text; each is checked here and named in the error. */

export function pathId(raw: string | string[] | undefined, what: string): number {
  const value = Array.isArray(raw) ? raw.join('/') : raw;
  if (value === undefined || !/^\d{1,15}$/.test(value)) throw badRequest(`The ${what} id must be a non-negative integer, not ${JSON.stringify(value ?? '')}.`);
  return Number(value);
}

function single(query: Record<string, unknown>, name: string): string | undefined {
  const value = query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badRequest(`Query parameter ${name} must be given once, as a single value.`);
  return value;
}

export function queryInt(query: Record<string, unknown>, name: string): number | undefined {
  const value = single(query, name);
  if (value === undefined) return undefined;
  if (!/^[+-]?\d+$/.test(value.trim())) throw badRequest(`Query parameter ${name} must be an integer, not ${JSON.stringify(value)}.`);
  // A huge integer is still an integer: clamp it rather than refuse it, and keep it exact for SQLite.
  return Math.max(-Number.MAX_SAFE_INTEGER, Math.min(Number.MAX_SAFE_INTEGER, Number(value)));
}

export function queryNumber(query: Record<string, unknown>, name: string): number | undefined {
  const value = single(query, name);
  if (value === undefined) return undefined;
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number)) throw badRequest(`Query parameter ${name} must be a number, not ${JSON.stringify(value)}.`);
  return number;
}

export const DEFAULT_PAGE_LIMIT = 20;
export const MAX_PAGE_LIMIT = 200;

/** SPEC §1.2: negative values clamp to 0; limit at most 200. */
export function pagination(query: Record<string, unknown>): { offset: number; limit: number } {
  const offset = Math.max(0, queryInt(query, 'offset') ?? 0);
  const limit = Math.min(MAX_PAGE_LIMIT, Math.max(0, queryInt(query, 'limit') ?? DEFAULT_PAGE_LIMIT));
  return { offset, limit };
}

/** The build a path names, read after the pending writes are flushed (so a build just answered is found); 404 if none. */
export function loadBuildRecord(store: Store, raw: string | string[] | undefined): BuildRecord {
  store.batcher.flush();
  const id = pathId(raw, 'build');
  const build = store.builds.get(id);
  if (!build) throw notFound(`Invalid build id: ${id}.`);
  return build;
}
