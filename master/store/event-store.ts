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

/** At most this many events per answer; a client pages on with since_id. */
export const MAX_EVENTS_PER_PAGE = 10_000;

export function createEventStore(db: Db, batcher: WriteBatcher) {
  const insert = db.prepare('INSERT INTO events (tag, timestamp, build_id, fields) VALUES (?, ?, ?, ?)');
  const sinceId = db.prepare<[number, number], EventRow>('SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?');
  const sinceTime = db.prepare<[number, number], EventRow>('SELECT * FROM events WHERE timestamp > ? ORDER BY id LIMIT ?');

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
    list(query: { sinceId?: number; sinceTimestamp?: number }): EventRecord[] {
      batcher.flush();
      const rows = query.sinceTimestamp !== undefined
        ? sinceTime.all(query.sinceTimestamp, MAX_EVENTS_PER_PAGE)
        : sinceId.all(query.sinceId ?? 0, MAX_EVENTS_PER_PAGE);
      return rows.map(toRecord);
    },
  };
}

export type EventStore = ReturnType<typeof createEventStore>;
