import type { Db } from '../store/database.ts';

/**
 * The SQL the pruner needs, kept here rather than in master/store: deleting whole builds is maintenance, not
 * part of any build's life. Timestamps in `builds.state_timestamps` are seconds since the epoch.
 */

/** A build in one of these statuses will never change again, so it may be pruned. */
const TERMINAL_SQL = `('SUCCESS', 'FAILURE', 'ERROR', 'CANCELED')`;

export interface PrunableBuild {
  readonly id: number;
  /** Seconds since the epoch. */
  readonly finished: number;
}

export interface OldestBuild {
  readonly id: number;
  /** Seconds since the epoch; null for a row without one (never written so by this master). */
  readonly queued: number | null;
}

export function createPruneQueries(db: Db) {
  const finishedBefore = db.prepare<[number, number], PrunableBuild>(
    `SELECT id, finished FROM (
       SELECT id, json_extract(state_timestamps, '$.finished') AS finished FROM builds WHERE status IN ${TERMINAL_SQL}
     ) WHERE finished IS NOT NULL AND finished < ? ORDER BY id LIMIT ?`,
  );
  const terminalBuilds = db.prepare<[], PrunableBuild>(
    `SELECT id, COALESCE(json_extract(state_timestamps, '$.finished'), 0) AS finished FROM builds WHERE status IN ${TERMINAL_SQL} ORDER BY id`,
  );
  const allIds = db.prepare<[], { id: number }>('SELECT id FROM builds');
  const isTerminal = db.prepare<[number], { id: number }>(`SELECT id FROM builds WHERE id = ? AND status IN ${TERMINAL_SQL}`);
  const unfinishedCount = db.prepare<[], { count: number }>(`SELECT COUNT(*) AS count FROM builds WHERE status NOT IN ${TERMINAL_SQL}`);
  const oldest = db.prepare<[], OldestBuild>(`SELECT id, json_extract(state_timestamps, '$.queued') AS queued FROM builds ORDER BY id LIMIT 1`);
  const deleteBuild = db.prepare<[number]>(`DELETE FROM builds WHERE id = ? AND status IN ${TERMINAL_SQL}`);
  // Events of no build (workers connecting and leaving) have no build to go with; they age out on their own.
  const deleteOldEvents = db.prepare<[number, number]>(
    'DELETE FROM events WHERE id IN (SELECT id FROM events WHERE build_id IS NULL AND timestamp < ? ORDER BY timestamp LIMIT ?)',
  );

  // Every table with a build_id column loses the build's rows, so that a table added later by a migration is
  // pruned too without anyone remembering this file. Names come from our own schema, never from a request.
  const childTables = (db.prepare(
    `SELECT m.name AS name FROM sqlite_master m, pragma_table_info(m.name) p
     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> 'builds' AND p.name = 'build_id' ORDER BY m.name`,
  ).all() as { name: string }[]).map((row) => row.name);
  ensureBuildIndexes(db, childTables);
  const deleteChildren = childTables.map((table) => db.prepare<[number]>(`DELETE FROM ${quoteName(table)} WHERE build_id = ?`));

  const deleteRows = db.transaction((buildId: number): boolean => {
    if (isTerminal.get(buildId) === undefined) return false;
    // The children reference builds (and atoms reference subjobs): checked at commit, when all are gone.
    db.pragma('defer_foreign_keys = ON');
    for (const statement of deleteChildren) statement.run(buildId);
    return deleteBuild.run(buildId).changes === 1;
  });

  return {
    childTables: childTables as readonly string[],
    /** Finished builds that finished before `beforeSeconds`, oldest first, at most `limit`. */
    finishedBefore: (beforeSeconds: number, limit: number): PrunableBuild[] => finishedBefore.all(beforeSeconds, limit),
    /** Every finished build, oldest first. */
    terminalBuilds: (): PrunableBuild[] => terminalBuilds.all(),
    allIds: (): Set<number> => new Set(allIds.all().map((row) => row.id)),
    isTerminal: (buildId: number): boolean => isTerminal.get(buildId) !== undefined,
    hasUnfinishedBuilds: (): boolean => (unfinishedCount.get()?.count ?? 0) > 0,
    oldest: (): OldestBuild | null => oldest.get() ?? null,
    /** Deletes every row of a finished build in one transaction; false when it is not finished (or gone). */
    deleteRows: (buildId: number): boolean => deleteRows(buildId),
    deleteOldEvents: (beforeSeconds: number, limit: number): number => deleteOldEvents.run(beforeSeconds, limit).changes,
  };
}

export type PruneQueries = ReturnType<typeof createPruneQueries>;

/**
 * Deleting by build must not scan a whole table per build (the events table grows by hundreds of thousands of
 * rows): a table whose indexes (its primary key included) do not start with build_id gets one. The names are
 * prefixed so that they can never clash with an index a migration creates.
 */
function ensureBuildIndexes(db: Db, tables: readonly string[]): void {
  const leadingColumns = db.prepare<[string], { name: string }>(
    `SELECT i.name AS name FROM pragma_index_list(?) l, pragma_index_info(l.name) i WHERE i.seqno = 0`,
  );
  for (const table of tables) {
    const isIndexed = leadingColumns.all(table).some((column) => column.name === 'build_id');
    if (!isIndexed) db.exec(`CREATE INDEX IF NOT EXISTS ${quoteName(`maintenance_${table}_by_build`)} ON ${quoteName(table)} (build_id)`);
  }
}

function quoteName(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Gives freed pages back to the file system. SQLite only reuses the pages of deleted rows; without vacuuming,
 * a database that once held a busy year keeps that size for ever. A file created with auto_vacuum NONE (as
 * ours are) must be rewritten once by a full VACUUM to switch to INCREMENTAL. VACUUM blocks this process
 * while it copies the whole file (about 1.5 s for 30 MB here), long enough for workers to miss heartbeats on a
 * large file, so it runs only at a quiet moment: no build unfinished, and the file no larger than
 * `maxVacuumBytes` (the master passes no limit at start, before it listens and before any worker is
 * connected). From then on each pass frees at most `maxPages` (4 MiB: tens of milliseconds), whatever runs.
 */
export function compactDatabase(
  db: Db,
  options: { maxPages: number; isQuiet: boolean; maxVacuumBytes: number },
): 'incremental' | 'vacuum' | 'skipped' {
  const mode = db.pragma('auto_vacuum', { simple: true }) as number;
  if (mode === 2) {
    db.pragma(`incremental_vacuum(${Math.max(1, Math.floor(options.maxPages))})`);
    return 'incremental';
  }
  if (mode === 1 || !options.isQuiet) return 'skipped';
  const bytes = (db.pragma('page_count', { simple: true }) as number) * (db.pragma('page_size', { simple: true }) as number);
  if (bytes > options.maxVacuumBytes) return 'skipped';
  db.pragma('auto_vacuum = INCREMENTAL');
  db.exec('VACUUM');
  return 'vacuum';
}
