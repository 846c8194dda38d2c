import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { applyBuildQuerySchema } from './build-query-schema.ts';

export type Db = Database.Database;

/** Migrations, numbered by position; `PRAGMA user_version` records how many have run. Never edit one that shipped. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    request_params TEXT NOT NULL,
    request TEXT NOT NULL,
    project_type TEXT NOT NULL,
    job_name TEXT,
    project_dir TEXT,
    job TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    num_atoms INTEGER,
    num_subjobs INTEGER NOT NULL DEFAULT 0,
    completed_subjobs INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    artifacts_ready INTEGER NOT NULL DEFAULT 0,
    state_timestamps TEXT NOT NULL
  );
  CREATE INDEX builds_by_status ON builds(status);
  CREATE TABLE subjobs (
    build_id INTEGER NOT NULL REFERENCES builds(id),
    id INTEGER NOT NULL,
    state TEXT NOT NULL,
    worker TEXT,
    PRIMARY KEY (build_id, id)
  ) WITHOUT ROWID;
  CREATE TABLE atoms (
    build_id INTEGER NOT NULL,
    subjob_id INTEGER NOT NULL,
    id INTEGER NOT NULL,
    variable TEXT NOT NULL,
    value TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    expected_time REAL,
    actual_time REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    stop_reason TEXT,
    PRIMARY KEY (build_id, subjob_id, id),
    FOREIGN KEY (build_id, subjob_id) REFERENCES subjobs(build_id, id)
  ) WITHOUT ROWID;
  CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tag TEXT NOT NULL,
    timestamp REAL NOT NULL,
    build_id INTEGER,
    fields TEXT NOT NULL
  );
  CREATE INDEX events_by_time ON events(timestamp);
  CREATE TABLE workers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
  );
  `,
  // 1: timing history, one row per job and atom string: the next build of the job plans with it.
  `
  CREATE TABLE timings (
    job_key TEXT NOT NULL,
    atom TEXT NOT NULL,
    seconds REAL NOT NULL,
    samples INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (job_key, atom)
  ) WITHOUT ROWID;
  `,
  // 2: live leases, so that a restarted master can let workers that come back resume what they still run.
  `
  CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    build_id INTEGER NOT NULL REFERENCES builds(id),
    subjob_id INTEGER NOT NULL,
    worker_name TEXT NOT NULL,
    session_id TEXT NOT NULL,
    executor_index INTEGER NOT NULL,
    build_executor_index INTEGER NOT NULL,
    atom_ids TEXT NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX leases_by_build ON leases (build_id);
  `,
  // 3: every run of an atom (SPEC §10), and on the atom how many of its runs failed (its `flaky` flag).
  `
  CREATE TABLE attempts (
    build_id INTEGER NOT NULL REFERENCES builds(id),
    subjob_id INTEGER NOT NULL,
    atom_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    stop_reason TEXT,
    started REAL NOT NULL,
    finished REAL,
    PRIMARY KEY (build_id, subjob_id, atom_id, attempt)
  ) WITHOUT ROWID;
  ALTER TABLE atoms ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
  `,
  // 4: pool sizes set by PUT /v2/pools/:name, with the conf's sizes they overrode (master/store/pool-size-store.ts).
  `
  CREATE TABLE pool_sizes (
    pool TEXT PRIMARY KEY,
    min_workers INTEGER NOT NULL,
    max_workers INTEGER NOT NULL,
    conf_min_workers INTEGER NOT NULL,
    conf_max_workers INTEGER NOT NULL,
    set_at REAL NOT NULL
  ) WITHOUT ROWID;
  `,
  // 5: workers made suspect by their failures (SPEC §15), by name: a bad host stays out of rotation across
  // master and worker restarts until an operator clears it.
  `
  CREATE TABLE worker_suspicions (
    name TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL
  ) WITHOUT ROWID;
  `,
  // 6: a build's events in id order (the rowid follows build_id in the index), for an event stream of one
  // build that starts from the past (master/events/event-hub.ts) and for learning from a build
  // (estimates/overheads.ts). The pruner's own index on the same column (maintenance/prune-queries.ts) goes.
  `
  CREATE INDEX events_by_build ON events(build_id);
  DROP INDEX IF EXISTS maintenance_events_by_build;
  `,
];

export function openDatabase(path: string): Db {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  // WAL + NORMAL: a commit is durable against a process crash (the master being killed); only a power
  // loss may lose the last transactions, and commits cost no fsync each.
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  applyBuildQuerySchema(db);
  return db;
}

function migrate(db: Db): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new Error(`The database was written by a newer ClusterRunner (schema ${current}, this one knows ${MIGRATIONS.length}).`);
  }
  for (let version = current; version < MIGRATIONS.length; version++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[version]!);
      db.pragma(`user_version = ${version + 1}`);
    })();
  }
}
