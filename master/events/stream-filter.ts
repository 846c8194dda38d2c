import type { Request } from 'express';
import { badRequest } from '../../shared/errors.ts';
import { EVENT_TAGS } from '../store/event-store.ts';

/** Tags the stream adds to the event log's own (SPEC §14): status changes and live console chunks. */
export const STREAM_TAGS = ['BUILD_STATUS', 'CONSOLE'] as const;
const KNOWN_TAGS: ReadonlySet<string> = new Set<string>([...EVENT_TAGS, ...STREAM_TAGS]);

/** What one client of GET /v2/events asked for. */
export interface StreamFilter {
  readonly buildId: number | null;
  /** null: every tag. */
  readonly tags: ReadonlySet<string> | null;
  readonly withConsole: boolean;
  /** Events after this id are sent (0: from the start of the log; null: only new ones). */
  readonly sinceId: number | null;
}

const MAX_ID = Number.MAX_SAFE_INTEGER;

function single(req: Request, name: string): string | undefined {
  const value = req.query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badRequest(`Query parameter ${name} must be given once, as a single value.`);
  return value;
}

function nonNegativeId(value: string, what: string): number {
  if (!/^\d{1,16}$/.test(value.trim()) || Number(value) > MAX_ID) throw badRequest(`${what} must be a non-negative integer, not ${JSON.stringify(value)}.`);
  return Number(value);
}

/** Parses the query and the Last-Event-ID header, naming the field in every refusal. */
export function parseStreamFilter(req: Request): StreamFilter {
  const known = ['build_id', 'tags', 'console', 'since_id'];
  for (const key of Object.keys(req.query)) {
    if (!known.includes(key)) throw badRequest(`Unknown query parameter "${key}". Known parameters: ${known.join(', ')}.`);
  }
  const rawBuild = single(req, 'build_id');
  const buildId = rawBuild === undefined ? null : nonNegativeId(rawBuild, 'Query parameter build_id');

  const rawTags = single(req, 'tags');
  let tags: Set<string> | null = null;
  if (rawTags !== undefined) {
    tags = new Set(rawTags.split(',').map((tag) => tag.trim().toUpperCase()).filter((tag) => tag !== ''));
    for (const tag of tags) {
      if (!KNOWN_TAGS.has(tag)) throw badRequest(`Query parameter tags: unknown tag ${JSON.stringify(tag.slice(0, 64))}. Known tags: ${[...KNOWN_TAGS].join(', ')}.`);
    }
    if (tags.size === 0) throw badRequest('Query parameter tags must list at least one tag.');
  }

  const rawConsole = single(req, 'console');
  if (rawConsole !== undefined && rawConsole !== 'true' && rawConsole !== 'false') {
    throw badRequest(`Query parameter console must be true or false, not ${JSON.stringify(rawConsole.slice(0, 64))}.`);
  }
  const withConsole = rawConsole === 'true';
  if (withConsole && buildId === null) throw badRequest('Query parameter console=true needs build_id: console output is streamed for one build.');

  // Last-Event-ID is what a browser's EventSource sends when it reconnects; it wins over since_id.
  const header = req.headers['last-event-id'];
  const rawSince = single(req, 'since_id');
  let sinceId: number | null = null;
  if (typeof header === 'string' && header.trim() !== '') sinceId = nonNegativeId(header, 'Header Last-Event-ID');
  else if (rawSince !== undefined) sinceId = nonNegativeId(rawSince, 'Query parameter since_id');
  return { buildId, tags, withConsole, sinceId };
}
