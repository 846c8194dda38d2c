import type { Statement } from 'better-sqlite3';
import type { Db } from './database.ts';
import type { WriteBatcher } from './write-batcher.ts';

export const EVENT_TAGS = [
  'BUILD_REQUEST_QUEUED',
  'BUILD_PREPARE_START',
  'BUILD_PREPARE_FINISH',
  'BUILD_SETUP_START',
  'BUILD_SETUP_FINISH',
  'BUILD_TEARDOWN_FINISH',
  'MASTER_TRIGGERED_SUBJOB',
  'MASTER_RECEIVED_RESULT',
  'ATOM_START',
  'ATOM_FINISH',
  'ATOM_ATTEMPT_FAILED',
  'WORKER_CONNECTED',
  'WORKER_LOST',
  'WORKER_HEALTH_CHANGED',
  'BUILD_WAITING_FOR_WORKERS',
  'BUILD_FINISHED',
  'POOL_WORKER_STARTED',
  'POOL_WORKER_START_FAILED',
  'POOL_WORKER_STOPPED',
  'BUILD_RETRIED',
  'WORKER_SUSPECT',
] as const;
export type EventTag = (typeof EVENT_TAGS)[number];

export interface EventRecord {
  readonly __id__: number;
  readonly __tag__: EventTag;
  readonly __timestamp__: number;
  readonly [field: string]: unknown;
}

interface EventRow {
  id: number;
  tag: EventTag;
  timestamp: number;
  fields: string;
}

export interface EventQuery {
  readonly sinceId?: number;
  /** Instead of sinceId: events stamped after this (epoch seconds). */
  readonly sinceTimestamp?: number;
  readonly buildId?: number;
  readonly tags?: readonly string[];
  readonly limit?: number;
}

/** At most this many events per answer; a client pages on with since_id. */
export const MAX_EVENTS_PER_PAGE = 10_000;

/** The read of events after an id, optionally of one build and some tags (a JSON array); exported for its query-plan test. */
export function eventsSinceIdSql(byBuild: boolean, byTags: boolean): string {
  return `SELECT * FROM events WHERE id > ?${byBuild ? ' AND build_id = ?' : ''}${byTags ? ' AND tag IN (SELECT value FROM json_each(?))' : ''} ORDER BY id LIMIT ?`;
}

export function createEventStore(db: Db, batcher: WriteBatcher) {
  const insert = db.prepare('INSERT INTO events (tag, timestamp, build_id, fields) VALUES (?, ?, ?, ?)');
  const sinceTime = db.prepare<[number, number], EventRow>('SELECT * FROM events WHERE timestamp > ? ORDER BY id LIMIT ?');
  // One statement per shape of filter. A stream for one build reads that build's events through
  // events_by_build: filtered in JavaScript, a stream from since_id=0 read and parsed the whole log (issue 18).
  const sinceId = new Map<string, Statement<unknown[], EventRow>>();
  const sinceIdStatement = (byBuild: boolean, byTags: boolean) => {
    const key = `${byBuild}/${byTags}`;
    let statement = sinceId.get(key);
    if (statement === undefined) {
      statement = db.prepare<unknown[], EventRow>(eventsSinceIdSql(byBuild, byTags));
      sinceId.set(key, statement);
    }
    return statement;
  };

  const listeners = new Set<(event: EventRecord) => void>();

  const toRecord = (row: EventRow): EventRecord => ({
    ...(JSON.parse(row.fields) as Record<string, unknown>),
    __id__: row.id,
    __tag__: row.tag,
    __timestamp__: row.timestamp,
  });

  return {
    /** Events ride in the same batched transactions as the results they describe. */
    append(tag: EventTag, fields: Record<string, unknown> = {}): void {
      const timestamp = Date.now() / 1000;
      const buildId = typeof fields['build_id'] === 'number' ? fields['build_id'] : null;
      const json = JSON.stringify(fields);
      batcher.add(() => {
        const { lastInsertRowid } = insert.run(tag, timestamp, buildId, json);
        // Listeners hear of the event once it is committed: a rolled-back batch announces nothing.
        return () => {
          for (const listener of listeners) listener({ ...fields, __id__: Number(lastInsertRowid), __tag__: tag, __timestamp__: timestamp });
        };
      }, buildId);
    },
    /**
     * Tells the listener of each event once it is committed, with its id. The live event stream wakes on it. Returns the way to stop.
     */
    onAppend(listener: (event: EventRecord) => void): () => void {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    /**
     * Events after sinceId (or sinceTimestamp), oldest first, at most `limit` of them (MAX_EVENTS_PER_PAGE);
     * with buildId only that build's, with tags only those tags.
     */
    list(query: EventQuery): EventRecord[] {
      batcher.flush();
      const limit = Math.min(query.limit ?? MAX_EVENTS_PER_PAGE, MAX_EVENTS_PER_PAGE);
      if (query.sinceTimestamp !== undefined) return sinceTime.all(query.sinceTimestamp, limit).map(toRecord);
      const values: unknown[] = [query.sinceId ?? 0];
      if (query.buildId !== undefined) values.push(query.buildId);
      if (query.tags !== undefined) values.push(JSON.stringify(query.tags));
      values.push(limit);
      return sinceIdStatement(query.buildId !== undefined, query.tags !== undefined).all(...values).map(toRecord);
    },
  };
}

export type EventStore = ReturnType<typeof createEventStore>;
