/**
 * The event log's reads (master/store/event-store.ts) on a real SQLite file: a read for one build or some
 * tags gets exactly those events, in id order, a page at a time; and a build's read goes through its index
 * rather than over the whole log (a stream of one build from since_id=0 read and parsed every event the
 * master had ever logged, in one turn of its event loop: issue 18).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Store } from '../../master/store/index.ts';
import { closeTempStores, openTempStore } from '../support/temp-store.ts';
import { eventsSinceIdSql, type EventRecord, type EventTag } from '../../master/store/event-store.ts';

afterEach(closeTempStores);

function newStore(): Store {
  return openTempStore('cr-events-').store;
}

/** 3000 events over builds 1–3 and none, tags in turn; what each was, by id. */
function fill(store: Store): { id: number; tag: EventTag; buildId: number | null }[] {
  const tags: EventTag[] = ['ATOM_START', 'ATOM_FINISH', 'BUILD_SETUP_START', 'WORKER_CONNECTED'];
  for (let i = 0; i < 3000; i++) {
    const buildId = i % 4 === 3 ? null : 1 + (i % 3);
    store.events.append(tags[i % tags.length]!, buildId === null ? { n: i } : { build_id: buildId, n: i });
  }
  return store.events.list({ sinceId: 0 }).map((event) => ({
    id: event.__id__, tag: event.__tag__, buildId: typeof event['build_id'] === 'number' ? event['build_id'] : null,
  }));
}

/** Every page after sinceId until an empty one, as a client pages on. */
function readAll(store: Store, query: { buildId?: number; tags?: readonly string[]; limit: number }): EventRecord[] {
  const all: EventRecord[] = [];
  for (;;) {
    const page = store.events.list({ ...query, sinceId: all.at(-1)?.__id__ ?? 0 });
    expect(page.length).toBeLessThanOrEqual(query.limit);
    if (page.length === 0) return all;
    all.push(...page);
  }
}

describe('event store reads', () => {
  it('reads one build, some tags, or both: exactly those events in id order, page after page', () => {
    const store = newStore();
    const log = fill(store);
    expect(log).toHaveLength(3000);

    const ofBuild2 = readAll(store, { buildId: 2, limit: 100 });
    expect(ofBuild2.map((event) => event.__id__)).toEqual(log.filter((event) => event.buildId === 2).map((event) => event.id));
    expect(ofBuild2.every((event) => event['build_id'] === 2 && typeof event['n'] === 'number')).toBe(true);

    const setups = readAll(store, { tags: ['BUILD_SETUP_START', 'WORKER_CONNECTED'], limit: 333 });
    expect(setups.map((event) => event.__id__))
      .toEqual(log.filter((event) => event.tag === 'BUILD_SETUP_START' || event.tag === 'WORKER_CONNECTED').map((event) => event.id));

    const both = readAll(store, { buildId: 1, tags: ['ATOM_START'], limit: 7 });
    expect(both.map((event) => event.__id__)).toEqual(log.filter((event) => event.buildId === 1 && event.tag === 'ATOM_START').map((event) => event.id));
    expect(both.length).toBeGreaterThan(0);

    expect(store.events.list({ sinceId: 0, tags: [] })).toEqual([]);
    expect(store.events.list({ sinceId: 0, buildId: 99 })).toEqual([]);
    // Unfiltered reads are as before: the whole log from an id, at most a page.
    expect(store.events.list({ sinceId: log[2499]!.id }).map((event) => event.__id__)).toEqual(log.slice(2500).map((event) => event.id));
  });

  it('upgrades a database of the schema before: the index comes, the pruner\'s own index on the same column goes', () => {
    const { store: before, path } = openTempStore('cr-events-');
    before.events.append('ATOM_START', { build_id: 1 });
    // As a master of schema 6 whose pruner had run left it.
    before.db.exec('DROP INDEX events_by_build; CREATE INDEX maintenance_events_by_build ON events (build_id); PRAGMA user_version = 6');
    before.close();
    const { store } = openTempStore('cr-events-', path);
    const indexes = store.db.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name`).all();
    expect(indexes).toEqual([{ name: 'events_by_build' }, { name: 'events_by_time' }]);
    expect(store.events.list({ sinceId: 0, buildId: 1 }).map((event) => event.__tag__)).toEqual(['ATOM_START']);
  });

  it('reads a build through its index, not over the whole log', () => {
    const store = newStore();
    for (const byTags of [false, true]) {
      const plan = store.db.prepare(`EXPLAIN QUERY PLAN ${eventsSinceIdSql(true, byTags)}`)
        .all(...[0, 1, ...(byTags ? ['["ATOM_START"]'] : []), 10]) as { detail: string }[];
      expect(plan.map((row) => row.detail).join('\n')).toMatch(/SEARCH events USING INDEX events_by_build/);
    }
  });
});
