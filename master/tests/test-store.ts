import type { Db } from '../store/database.ts';
import type { ParsedTest, TestStatus } from './junit-parser.ts';

/**
 * Per-test results in SQLite (SPEC §15), as named schema steps recorded in `schema_steps` beside those of
 * build-query-schema.ts (never edit a step once shipped; add one):
 *
 * - `test_results`: one row per test case of one attempt of one atom, numbered per build in arrival order.
 *   `is_latest` is 1 for the rows of each atom's latest attempt: lists and counts show those, while an
 *   earlier attempt's failures stay for flaky detection.
 * - `test_summaries`: the counts of the latest rows per build, kept as rows arrive, so a build list shows
 *   every build's summary without counting its tests.
 * - `test_reports`: one row per report file read (or refused, with why): the per-file report.
 * - `test_file_times`: per job and test file (or class), the seconds its tests took in the last build that
 *   ran them: where atoms are test files, an atom with no timing history of its own is estimated from it.
 *
 * Rows go with their build: the foreign keys cascade when the pruner deletes it.
 */
const STEPS: readonly { readonly name: string; readonly sql: string }[] = [
  {
    name: 'test-results-1',
    sql: `
      CREATE TABLE test_results (
        build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        subjob_id INTEGER NOT NULL,
        atom_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        is_latest INTEGER NOT NULL,
        status TEXT NOT NULL,
        name TEXT NOT NULL,
        classname TEXT NOT NULL,
        file TEXT,
        time REAL,
        message TEXT,
        PRIMARY KEY (build_id, seq)
      ) WITHOUT ROWID;
      CREATE INDEX test_results_by_atom ON test_results (build_id, subjob_id, atom_id, attempt);
      CREATE INDEX test_results_by_status ON test_results (build_id, status, seq) WHERE is_latest = 1;
      CREATE TABLE test_summaries (
        build_id INTEGER PRIMARY KEY REFERENCES builds(id) ON DELETE CASCADE,
        passed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        errored INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        rows INTEGER NOT NULL DEFAULT 0
      );
      CREATE TABLE test_reports (
        build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
        subjob_id INTEGER NOT NULL,
        atom_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        path TEXT NOT NULL,
        num_tests INTEGER NOT NULL,
        error TEXT,
        PRIMARY KEY (build_id, subjob_id, atom_id, attempt, path)
      ) WITHOUT ROWID;
      CREATE TABLE test_file_times (
        job_key TEXT NOT NULL,
        file TEXT NOT NULL,
        seconds REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (job_key, file)
      ) WITHOUT ROWID;
    `,
  },
];

export interface TestSummary {
  readonly passed: number;
  readonly failed: number;
  readonly errored: number;
  readonly skipped: number;
}

export interface TestRow {
  readonly name: string;
  readonly classname: string;
  readonly file: string | null;
  readonly status: TestStatus;
  readonly time: number | null;
  readonly subjob_id: number;
  readonly atom_id: number;
  readonly attempt: number;
  readonly message: string | null;
}

export interface TestReportRow {
  readonly subjob_id: number;
  readonly atom_id: number;
  readonly attempt: number;
  readonly path: string;
  readonly num_tests: number;
  readonly error: string | null;
}

export interface AtomAttempt {
  readonly buildId: number;
  readonly subjobId: number;
  readonly atomId: number;
  readonly attempt: number;
}

const EMPTY_SUMMARY: TestSummary = Object.freeze({ passed: 0, failed: 0, errored: 0, skipped: 0 });
/** A build keeps at most this many test rows; reports past it are refused, saying so. */
export const MAX_TEST_ROWS_PER_BUILD = 2_000_000;
/** Test files remembered per job for estimates. */
const MAX_FILE_TIMES_PER_JOB = 100_000;

function applySchema(db: Db): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_steps (name TEXT PRIMARY KEY, applied_at REAL NOT NULL) WITHOUT ROWID');
  const isApplied = db.prepare<[string], { name: string }>('SELECT name FROM schema_steps WHERE name = ?');
  const record = db.prepare('INSERT INTO schema_steps (name, applied_at) VALUES (?, ?)');
  for (const step of STEPS) {
    if (isApplied.get(step.name)) continue;
    db.transaction(() => {
      db.exec(step.sql);
      record.run(step.name, Date.now() / 1000);
    })();
  }
}

export interface TestQuery {
  readonly status?: TestStatus;
  /** Case-insensitive substring of the name, class name, file or message. */
  readonly q?: string;
  readonly offset: number;
  readonly limit: number;
}

function createTestStore(db: Db) {
  applySchema(db);
  const summary = db.prepare<[number], TestSummary & { rows: number }>(
    'SELECT passed, failed, errored, skipped, rows FROM test_summaries WHERE build_id = ?');
  const nextSeq = db.prepare<[number], { next: number }>('SELECT coalesce(max(seq), -1) + 1 AS next FROM test_results WHERE build_id = ?');
  const latestCounts = db.prepare<[number, number, number], { status: TestStatus; count: number }>(
    `SELECT status, count(*) AS count FROM test_results
     WHERE build_id = ? AND subjob_id = ? AND atom_id = ? AND is_latest = 1 GROUP BY status`);
  const supersede = db.prepare('UPDATE test_results SET is_latest = 0 WHERE build_id = ? AND subjob_id = ? AND atom_id = ? AND is_latest = 1');
  const insertResult = db.prepare(
    `INSERT INTO test_results (build_id, seq, subjob_id, atom_id, attempt, is_latest, status, name, classname, file, time, message)
     VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)`);
  const addSummary = db.prepare(
    `INSERT INTO test_summaries (build_id, passed, failed, errored, skipped, rows) VALUES (@buildId, @passed, @failed, @errored, @skipped, @rows)
     ON CONFLICT (build_id) DO UPDATE SET passed = passed + excluded.passed, failed = failed + excluded.failed,
       errored = errored + excluded.errored, skipped = skipped + excluded.skipped, rows = rows + excluded.rows`);
  const insertReport = db.prepare(
    `INSERT OR REPLACE INTO test_reports (build_id, subjob_id, atom_id, attempt, path, num_tests, error) VALUES (?, ?, ?, ?, ?, ?, ?)`);
  const reportErrors = db.prepare<[number, number], TestReportRow>(
    `SELECT subjob_id, atom_id, attempt, path, num_tests, error FROM test_reports
     WHERE build_id = ? AND error IS NOT NULL ORDER BY subjob_id, atom_id, attempt, path LIMIT ?`);
  const countFileTimes = db.prepare<[string], { count: number }>('SELECT count(*) AS count FROM test_file_times WHERE job_key = ?');
  const upsertFileTime = db.prepare(
    `INSERT INTO test_file_times (job_key, file, seconds, updated_at) VALUES (?, ?, ?, ?)
     ON CONFLICT (job_key, file) DO UPDATE SET seconds = excluded.seconds, updated_at = excluded.updated_at`);
  const loadFileTimes = db.prepare<[string, number], { file: string; seconds: number }>(
    'SELECT file, seconds FROM test_file_times WHERE job_key = ? ORDER BY updated_at DESC LIMIT ?');

  return {
    summary(buildId: number): TestSummary {
      const row = summary.get(buildId);
      return row === undefined ? EMPTY_SUMMARY : { passed: row.passed, failed: row.failed, errored: row.errored, skipped: row.skipped };
    },

    /** Rows already held by the build (the per-build bound). */
    rowCount(buildId: number): number {
      return summary.get(buildId)?.rows ?? 0;
    },

    /**
     * A new attempt's results arrive: the atom's earlier rows stop counting (they stay, as not latest).
     * Runs before the attempt's reports are read, also when it left none.
     */
    startAttempt(at: AtomAttempt): void {
      db.transaction(() => {
        const counts = Object.fromEntries(latestCounts.all(at.buildId, at.subjobId, at.atomId).map((row) => [row.status, row.count]));
        if (Object.keys(counts).length === 0) return;
        supersede.run(at.buildId, at.subjobId, at.atomId);
        addSummary.run({ buildId: at.buildId, passed: -(counts['passed'] ?? 0), failed: -(counts['failed'] ?? 0),
          errored: -(counts['errored'] ?? 0), skipped: -(counts['skipped'] ?? 0), rows: 0 });
      })();
    },

    /** One report's tests, in one transaction (a report is bounded by the parser's limits). */
    addReport(at: AtomAttempt, path: string, tests: readonly ParsedTest[]): void {
      db.transaction(() => {
        let seq = nextSeq.get(at.buildId)!.next;
        const counts = { passed: 0, failed: 0, errored: 0, skipped: 0 };
        for (const test of tests) {
          insertResult.run(at.buildId, seq++, at.subjobId, at.atomId, at.attempt, test.status, test.name, test.classname, test.file,
            test.timeS, test.message);
          counts[test.status]++;
        }
        addSummary.run({ buildId: at.buildId, ...counts, rows: tests.length });
        insertReport.run(at.buildId, at.subjobId, at.atomId, at.attempt, path, tests.length, null);
      })();
    },

    reportError(at: AtomAttempt, path: string, error: string): void {
      insertReport.run(at.buildId, at.subjobId, at.atomId, at.attempt, path, 0, error);
    },

    /** The files that could not be read, first `limit` of them. */
    reportErrors(buildId: number, limit: number): TestReportRow[] {
      return reportErrors.all(buildId, limit);
    },

    /** The latest attempt's tests of the build, filtered, one page, and how many match in all. */
    list(buildId: number, query: TestQuery): { tests: TestRow[]; total: number } {
      const where = ['build_id = @buildId', 'is_latest = 1'];
      if (query.status !== undefined) where.push('status = @status');
      if (query.q !== undefined && query.q !== '') {
        // instr on lower(): no LIKE wildcards to escape in what the user typed.
        where.push(`(instr(lower(name), @q) > 0 OR instr(lower(classname), @q) > 0 OR instr(lower(coalesce(file, '')), @q) > 0
          OR instr(lower(coalesce(message, '')), @q) > 0)`);
      }
      const params = { buildId, status: query.status, q: query.q?.toLowerCase(), offset: query.offset, limit: query.limit };
      const clause = where.join(' AND ');
      const total = db.prepare<typeof params, { total: number }>(`SELECT count(*) AS total FROM test_results WHERE ${clause}`).get(params)!.total;
      const tests = db.prepare<typeof params, TestRow>(
        `SELECT name, classname, file, status, time, subjob_id, atom_id, attempt, message FROM test_results WHERE ${clause}
         ORDER BY seq LIMIT @limit OFFSET @offset`).all(params);
      return { tests, total };
    },

    /** What each test file's tests took in this attempt: the estimate of an atom that runs that file. */
    recordFileTimes(jobKey: string, tests: readonly ParsedTest[]): void {
      const byFile = new Map<string, number>();
      for (const test of tests) {
        if (test.timeS === null) continue;
        for (const key of testFileKeys(test)) byFile.set(key, (byFile.get(key) ?? 0) + test.timeS);
      }
      if (byFile.size === 0) return;
      if (countFileTimes.get(jobKey)!.count + byFile.size > MAX_FILE_TIMES_PER_JOB) return;
      const now = Date.now() / 1000;
      db.transaction(() => {
        for (const [file, seconds] of byFile) upsertFileTime.run(jobKey, file, seconds, now);
      })();
    },

    /** Seconds by test file key, the most recent first. */
    fileTimes(jobKey: string): Map<string, number> {
      return new Map(loadFileTimes.all(jobKey, MAX_FILE_TIMES_PER_JOB).map((row) => [row.file, row.seconds]));
    },
  };
}

export type TestStore = ReturnType<typeof createTestStore>;

const stores = new WeakMap<Db, TestStore>();

/** The test tables of this database, created on first use; one set of prepared statements per database. */
export function testStoreOf(db: Db): TestStore {
  let store = stores.get(db);
  if (store === undefined) {
    store = createTestStore(db);
    stores.set(db, store);
  }
  return store;
}

/**
 * The keys a test is known by for estimates: its file (normalised: no leading `./`), or else its class
 * name (pytest's dotted module `tests.unit.test_x`, Vitest's file path).
 */
export function testFileKeys(test: Pick<ParsedTest, 'file' | 'classname'>): string[] {
  if (test.file !== null && test.file !== '') return [normaliseFileKey(test.file)];
  return test.classname === '' ? [] : [normaliseFileKey(test.classname)];
}

export function normaliseFileKey(path: string): string {
  return path.replace(/^\$PROJECT_DIR\//, '').replace(/^(\.\/)+/, '').replace(/\\/g, '/');
}
