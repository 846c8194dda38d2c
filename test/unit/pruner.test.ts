import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Registry, Gauge } from 'prom-client';
import { openDatabase, type Db } from '../../master/store/database.ts';
import { Pruner } from '../../master/maintenance/pruner.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { folderBytes } from '../../shared/folder-size.ts';

const DAY_MS = 86_400_000;
const dirs: string[] = [];
const dbs: Db[] = [];

afterEach(() => {
  for (const db of dbs.splice(0)) db.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

interface Fixture {
  readonly base: string;
  readonly db: Db;
  readonly results: string;
  readonly projects: string;
}

function fixture(): Fixture {
  const base = mkdtempSync(join(tmpdir(), 'cr-pruner-'));
  dirs.push(base);
  // A real SQLite file with the master's own migrations, as a master opens it.
  const db = openDatabase(join(base, 'clusterrunner.db'));
  dbs.push(db);
  return { base, db, results: join(base, 'results'), projects: join(base, 'projects') };
}

/** A build with rows in every table that holds build rows, and result files of `bytes`. */
function addBuild(f: Fixture, options: { status: string; queuedMs: number; finishedMs?: number; bytes?: number }): number {
  const stamps: Record<string, number> = { queued: options.queuedMs / 1000 };
  if (options.finishedMs !== undefined) stamps['finished'] = options.finishedMs / 1000;
  const id = Number(f.db.prepare(
    `INSERT INTO builds (status, request_params, request, project_type, state_timestamps) VALUES (?, '{}', '{}', 'directory', ?)`,
  ).run(options.status, JSON.stringify(stamps)).lastInsertRowid);
  f.db.prepare(`INSERT INTO subjobs (build_id, id, state) VALUES (?, 0, 'COMPLETED')`).run(id);
  f.db.prepare(`INSERT INTO atoms (build_id, subjob_id, id, variable, value, state) VALUES (?, 0, 0, 'X', '1', 'COMPLETED')`).run(id);
  f.db.prepare(`INSERT INTO events (tag, timestamp, build_id, fields) VALUES ('BUILD_FINISHED', ?, ?, '{}')`).run(options.queuedMs / 1000, id);
  f.db.prepare(
    `INSERT INTO leases (id, build_id, subjob_id, worker_name, session_id, executor_index, build_executor_index, atom_ids) VALUES (?, ?, 0, 'w', 's', 0, 0, '[0]')`,
  ).run(`lease-${id}`, id);
  const dir = join(f.results, String(id), 'artifacts', 'artifact_0_0');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'clusterrunner_console_output'), Buffer.alloc(options.bytes ?? 4096, 'x'));
  writeFileSync(join(f.results, String(id), 'results.tar.gz'), Buffer.alloc(1024, 'y'));
  mkdirSync(join(f.projects, String(id)), { recursive: true });
  return id;
}

function rowsOf(db: Db, buildId: number): Record<string, number> {
  const count = (table: string, column: string) =>
    (db.prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE ${column} = ?`).get(buildId) as { n: number }).n;
  return {
    builds: count('builds', 'id'), subjobs: count('subjobs', 'build_id'), atoms: count('atoms', 'build_id'),
    events: count('events', 'build_id'), leases: count('leases', 'build_id'),
  };
}

const NO_ROWS = { builds: 0, subjobs: 0, atoms: 0, events: 0, leases: 0 };
const ALL_ROWS = { builds: 1, subjobs: 1, atoms: 1, events: 1, leases: 1 };

function pruner(f: Fixture, clock: { ms: number }, options: { keepDays?: number; maxResultsBytes?: number; maxBuildsPerPass?: number } = {}) {
  const registry = new Registry();
  const gauges = {
    resultsBytes: new Gauge({ name: 'results_bytes', help: 'h', registers: [registry] }),
    oldestBuildTimestampSeconds: new Gauge({ name: 'oldest', help: 'h', registers: [registry] }),
  };
  const instance = new Pruner({
    db: f.db, resultsRoot: f.results, checkoutsRoot: f.projects, log: createSilentLogger(),
    keepBuildsMs: (options.keepDays ?? 30) * DAY_MS, maxResultsBytes: options.maxResultsBytes ?? 1e12,
    maxBuildsPerPass: options.maxBuildsPerPass, now: () => clock.ms, gauges,
  });
  return { instance, registry };
}

describe('Pruner', () => {
  it('prunes the files and rows of builds finished before keep_builds_days, and keeps recent ones', async () => {
    const f = fixture();
    const start = Date.UTC(2026, 0, 1);
    const old = addBuild(f, { status: 'SUCCESS', queuedMs: start, finishedMs: start + 60_000 });
    const failed = addBuild(f, { status: 'FAILURE', queuedMs: start + 1000, finishedMs: start + 61_000 });
    const recent = addBuild(f, { status: 'SUCCESS', queuedMs: start + 20 * DAY_MS, finishedMs: start + 20 * DAY_MS + 60_000 });
    const clock = { ms: start + 10 * DAY_MS };
    const { instance, registry } = pruner(f, clock);

    // Ten days on, nothing is 30 days old yet.
    expect((await instance.runPass()).prunedByAge).toEqual([]);
    expect(rowsOf(f.db, old)).toEqual(ALL_ROWS);

    clock.ms = start + 31 * DAY_MS;
    const report = await instance.runPass();
    expect(report.prunedByAge).toEqual([old, failed]);
    for (const id of [old, failed]) {
      expect(rowsOf(f.db, id)).toEqual(NO_ROWS);
      expect(existsSync(join(f.results, String(id)))).toBe(false);
      expect(existsSync(join(f.projects, String(id)))).toBe(false);
    }
    expect(rowsOf(f.db, recent)).toEqual(ALL_ROWS);
    expect(existsSync(join(f.results, String(recent), 'results.tar.gz'))).toBe(true);
    expect(report.oldestBuildId).toBe(recent);
    expect(report.resultsBytes).toBe(await folderBytes(join(f.results, String(recent))));

    const metrics = await registry.metrics();
    expect(metrics).toContain(`results_bytes ${report.resultsBytes}`);
    expect(metrics).toContain(`oldest ${(start + 20 * DAY_MS) / 1000}`);
    expect(f.db.pragma('foreign_key_check')).toEqual([]);
    // Deleting by build uses an index: events has events_by_build, the others' primary keys start with build_id;
    // the pruner adds its own only where none does, and here none is missing.
    const ownIndexes = f.db.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'maintenance_%'`).all();
    expect(ownIndexes).toEqual([]);
    const plan = f.db.prepare('EXPLAIN QUERY PLAN DELETE FROM events WHERE build_id = ?').all(1) as { detail: string }[];
    expect(plan.map((row) => row.detail).join('\n')).toContain('SEARCH events USING INDEX events_by_build');
  });

  it('never prunes a build that is not finished, however old and whatever the size bound', async () => {
    const f = fixture();
    const start = Date.UTC(2025, 0, 1);
    const running = addBuild(f, { status: 'BUILDING', queuedMs: start, bytes: 200_000 });
    const queued = addBuild(f, { status: 'QUEUED', queuedMs: start + 1000 });
    const preparing = addBuild(f, { status: 'PREPARING', queuedMs: start + 2000 });
    const done = addBuild(f, { status: 'CANCELED', queuedMs: start + 3000, finishedMs: start + 4000 });
    const { instance } = pruner(f, { ms: start + 400 * DAY_MS }, { keepDays: 1, maxResultsBytes: 1 });

    const report = await instance.runPass();
    expect(report.prunedByAge).toEqual([done]);
    expect(report.prunedBySize).toEqual([]);
    for (const id of [running, queued, preparing]) {
      expect(rowsOf(f.db, id)).toEqual(ALL_ROWS);
      expect(existsSync(join(f.results, String(id), 'results.tar.gz'))).toBe(true);
    }
    expect(report.resultsBytes).toBeGreaterThan(200_000);
  });

  it('past max_results_bytes prunes the oldest finished builds first, until the rest fits', async () => {
    const f = fixture();
    const start = Date.UTC(2026, 5, 1);
    const ids = [0, 1, 2, 3].map((n) => addBuild(f, { status: 'SUCCESS', queuedMs: start + n * 1000, finishedMs: start + n * 1000 + 500, bytes: 100_000 }));
    const sizes = await Promise.all(ids.map((id) => folderBytes(join(f.results, String(id)))));
    // Room for the two newest and a little more: the two oldest must go, in age order.
    const bound = sizes[2]! + sizes[3]! + 10_000;
    const { instance } = pruner(f, { ms: start + DAY_MS }, { maxResultsBytes: bound });

    const report = await instance.runPass();
    expect(report.prunedByAge).toEqual([]);
    expect(report.prunedBySize).toEqual([ids[0], ids[1]]);
    expect(report.resultsBytes).toBe(sizes[2]! + sizes[3]!);
    expect(report.resultsBytes).toBeLessThanOrEqual(bound);
    expect(rowsOf(f.db, ids[2]!)).toEqual(ALL_ROWS);
    expect(rowsOf(f.db, ids[3]!)).toEqual(ALL_ROWS);
    // A second pass finds nothing more to do.
    expect((await instance.runPass()).prunedBySize).toEqual([]);
  });

  it('spares a build finished minutes ago from the size bound, so that its results can still be fetched', async () => {
    const f = fixture();
    const start = Date.UTC(2026, 5, 1);
    const clock = { ms: start };
    const justFinished = addBuild(f, { status: 'FAILURE', queuedMs: start - 60_000, finishedMs: start - 60_000, bytes: 100_000 });
    const { instance } = pruner(f, clock, { maxResultsBytes: 1 });
    expect((await instance.runPass()).prunedBySize).toEqual([]);
    clock.ms = start + 11 * 60_000;
    expect((await instance.runPass()).prunedBySize).toEqual([justFinished]);
  });

  it('removes old events of no build and old results folders of no build, and keeps recent ones', async () => {
    const f = fixture();
    const start = Date.UTC(2026, 0, 1);
    const clock = { ms: start + 40 * DAY_MS };
    const insertEvent = f.db.prepare(`INSERT INTO events (tag, timestamp, build_id, fields) VALUES ('WORKER_CONNECTED', ?, NULL, '{}')`);
    insertEvent.run(start / 1000);
    insertEvent.run((clock.ms - DAY_MS) / 1000);
    const kept = addBuild(f, { status: 'SUCCESS', queuedMs: clock.ms - DAY_MS, finishedMs: clock.ms - DAY_MS });
    // Folders no row points to: one written long ago, one written now (its build may be on its way).
    for (const id of [900, 901]) mkdirSync(join(f.results, String(id), 'artifacts'), { recursive: true });
    const longAgo = new Date(start);
    utimesSync(join(f.results, '900'), longAgo, longAgo);

    const report = await pruner(f, clock).instance.runPass();
    const timestamps = (f.db.prepare('SELECT timestamp FROM events WHERE build_id IS NULL').all() as { timestamp: number }[]).map((row) => row.timestamp);
    expect(timestamps).toEqual([(clock.ms - DAY_MS) / 1000]);
    expect(existsSync(join(f.results, '900'))).toBe(false);
    expect(existsSync(join(f.results, '901'))).toBe(true);
    expect(rowsOf(f.db, kept)).toEqual(ALL_ROWS);
    expect(report.oldestBuildId).toBe(kept);
  });

  it('prunes at most maxBuildsPerPass builds a pass and goes on at the next', async () => {
    const f = fixture();
    const start = Date.UTC(2026, 0, 1);
    const ids = Array.from({ length: 5 }, (_, n) => addBuild(f, { status: 'ERROR', queuedMs: start + n, finishedMs: start + n + 1 }));
    const { instance } = pruner(f, { ms: start + 60 * DAY_MS }, { maxBuildsPerPass: 2 });
    expect((await instance.runPass()).prunedByAge).toEqual(ids.slice(0, 2));
    expect((await instance.runPass()).prunedByAge).toEqual(ids.slice(2, 4));
    expect((await instance.runPass()).prunedByAge).toEqual(ids.slice(4));
  });

  it('keeps SQLite compact: a full VACUUM only when no build runs (a restart), then incremental vacuum each pass', async () => {
    const f = fixture();
    const start = Date.UTC(2026, 0, 1);
    const insertEvent = f.db.prepare(`INSERT INTO events (tag, timestamp, build_id, fields) VALUES ('ATOM_FINISH', ?, ?, ?)`);
    const addOldBuilds = (count: number, offsetMs: number) => {
      for (let n = 0; n < count; n++) {
        const id = addBuild(f, { status: 'SUCCESS', queuedMs: start + offsetMs + n, finishedMs: start + offsetMs + n + 1, bytes: 512 });
        f.db.transaction(() => {
          for (let e = 0; e < 200; e++) insertEvent.run(start / 1000, id, JSON.stringify({ filler: 'z'.repeat(500) }));
        })();
      }
    };
    const running = addBuild(f, { status: 'BUILDING', queuedMs: start });
    addOldBuilds(20, 1000);
    f.db.pragma('wal_checkpoint(TRUNCATE)');
    const pagesBefore = f.db.pragma('page_count', { simple: true }) as number;
    const clock = { ms: start + 40 * DAY_MS };

    // A build runs: no full VACUUM, neither at start nor after pruning.
    const first = pruner(f, clock, { maxBuildsPerPass: 100 }).instance;
    expect(f.db.pragma('auto_vacuum', { simple: true })).toBe(0);
    const report = await first.runPass();
    expect(report.prunedByAge).toHaveLength(20);
    expect(report.compaction).toBe('skipped');
    expect(f.db.pragma('page_count', { simple: true }) as number).toBeGreaterThanOrEqual(pagesBefore);

    // It finished; the master restarts: the file is rewritten once, with incremental vacuum from then on.
    f.db.prepare(`UPDATE builds SET status = 'SUCCESS', state_timestamps = ? WHERE id = ?`).run(JSON.stringify({ queued: start / 1000, finished: clock.ms / 1000 }), running);
    const second = pruner(f, clock, { maxBuildsPerPass: 100 }).instance;
    expect(f.db.pragma('auto_vacuum', { simple: true })).toBe(2);
    expect(f.db.pragma('page_count', { simple: true }) as number).toBeLessThan(pagesBefore / 4);

    addOldBuilds(20, 2000);
    const grown = f.db.pragma('page_count', { simple: true }) as number;
    const again = await second.runPass();
    expect(again.prunedByAge).toHaveLength(20);
    expect(again.compaction).toBe('incremental');
    expect(f.db.pragma('page_count', { simple: true }) as number).toBeLessThan(grown / 4);
    expect(f.db.pragma('freelist_count', { simple: true })).toBe(0);
    expect(f.db.pragma('integrity_check', { simple: true })).toBe('ok');
  });

  it('start() runs a first pass at once and close() is idempotent', async () => {
    const f = fixture();
    const start = Date.UTC(2026, 0, 1);
    const old = addBuild(f, { status: 'SUCCESS', queuedMs: start, finishedMs: start + 1 });
    const { instance } = pruner(f, { ms: start + 90 * DAY_MS });
    instance.start();
    await expect.poll(() => rowsOf(f.db, old).builds, { timeout: 10_000 }).toBe(0);
    await Promise.all([instance.close(), instance.close()]);
  });
});
