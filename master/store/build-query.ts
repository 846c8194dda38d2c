import type { Statement } from 'better-sqlite3';
import type { Db } from './database.ts';
import type { AtomRecord } from './atom-store.ts';
import { BUILD_STATUSES, isTerminal, type BuildStatus } from '../model/build-status.ts';
import { SearchSyntaxError, type SearchTerm } from '../../shared/api/build-search.ts';
import { badRequest } from '../../shared/errors.ts';

/**
 * Finding builds (SPEC §11) in SQL: filters and search terms become one WHERE clause over the narrow,
 * indexed build_facts table and the search index (build-query-schema.ts), so a page of a 100,000-build
 * history reads indexes and its own rows only.
 */

/** Every filter is optional; together they are ANDed. Field matches ignore case. */
export interface BuildFilters {
  readonly statuses?: readonly BuildStatus[];
  readonly jobName?: string;
  readonly branch?: string;
  /** The repository URL (as shown, credentials masked) or its name. */
  readonly repository?: string;
  /** Epoch seconds, exclusive. */
  readonly createdAfter?: number;
  readonly createdBefore?: number;
  readonly search?: readonly SearchTerm[];
  /** `latest` only: terminal or not, FAILURE/ERROR or not. */
  readonly isDone?: boolean;
  readonly isFailed?: boolean;
}

export type ListOrder = 'asc' | 'desc';

/** SPEC §11: a list shows at most this many failed atoms per build; the build itself shows them all. */
export const MAX_LISTED_FAILED_ATOMS = 100;

const TERMINAL: readonly BuildStatus[] = BUILD_STATUSES.filter(isTerminal);
const FAILED: readonly BuildStatus[] = ['FAILURE', 'ERROR'];
/** Words shorter than a trigram cannot use the search index; they scan its text instead. */
const MIN_INDEXED_CHARS = 3;

/** A status name in any case, or a 400 naming where it was given and the names that exist. */
export function parseStatusName(name: string, where: string): BuildStatus {
  const upper = name.trim().toUpperCase();
  const status = BUILD_STATUSES.find((known) => known === upper);
  if (status === undefined) throw badRequest(`${where}: unknown build status ${JSON.stringify(name)}; known: ${BUILD_STATUSES.join(', ')}.`);
  return status;
}

function statusesIn(statuses: readonly BuildStatus[], isNegated = false): { sql: string; params: unknown[] } {
  return { sql: `status ${isNegated ? 'NOT IN' : 'IN'} (${statuses.map(() => '?').join(', ')})`, params: [...statuses] };
}

/**
 * A URL (it holds '/' or ':') matches the repository as shown, anything else its name: one indexed column
 * either way, where an OR of both would make SQLite read every row to count.
 */
function repositorySql(value: string): { sql: string; params: unknown[] } {
  return /[/:]/.test(value)
    ? { sql: 'repository = ? COLLATE NOCASE', params: [value] }
    : { sql: 'repository_name = ? COLLATE NOCASE', params: [value] };
}

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (char) => `\\${char}`);
}

/**
 * Whether the filters keep unfinished builds only (running, or named non-terminal statuses): however long the
 * history, those are the queue and what runs, a few rows of the status index.
 */
function keepsOnlyUnfinished(filters: BuildFilters): boolean {
  const unfinished = (names: readonly string[]) =>
    names.length > 0 && names.every((name) => BUILD_STATUSES.some((status) => status === name.toUpperCase() && !isTerminal(status)));
  if (filters.statuses !== undefined && unfinished(filters.statuses)) return true;
  if (filters.isDone === false) return true;
  return (filters.search ?? []).some((term) => !term.isNegated &&
    ((term.kind === 'state' && term.state === 'running') || (term.kind === 'field' && term.field === 'status' && unfinished(term.value.split(',')))));
}

/**
 * `matchColumn` is `+id` when the filters keep unfinished builds only: the unary plus keeps SQLite from walking
 * every text match to probe each one (28,000 for a common word in a 100,000-build history: 24 ms), so it reads
 * the few unfinished builds and looks each up among the matches instead (10 ms; bench/lists.ts).
 */
function termSql(term: SearchTerm, matchColumn: 'id' | '+id' = 'id'): { sql: string; params: unknown[] } {
  switch (term.kind) {
    case 'state': {
      const statuses = term.state === 'running' ? BUILD_STATUSES.filter((s) => !isTerminal(s)) : term.state === 'done' ? TERMINAL : FAILED;
      return statusesIn(statuses);
    }
    case 'text':
      // A phrase of trigrams matches any substring of three characters or more, ignoring case.
      if ([...term.text].length >= MIN_INDEXED_CHARS) {
        return { sql: `${matchColumn} IN (SELECT rowid FROM build_search WHERE build_search MATCH ?)`, params: [`"${term.text.replace(/"/g, '""')}"`] };
      }
      return { sql: `${matchColumn} IN (SELECT id FROM build_text WHERE body LIKE ? ESCAPE '\\')`, params: [`%${escapeLike(term.text)}%`] };
    case 'field':
      switch (term.field) {
        case 'repo':
          return repositorySql(term.value);
        case 'branch':
          return { sql: 'branch = ? COLLATE NOCASE', params: [term.value] };
        case 'job':
          return { sql: 'job_name = ? COLLATE NOCASE', params: [term.value] };
        case 'id':
          if (!/^\d{1,15}$/.test(term.value)) {
            throw new SearchSyntaxError(term.position, "a build id (digits) after 'id:'", `found ${JSON.stringify(term.value)}`);
          }
          return { sql: 'id = ?', params: [Number(term.value)] };
        case 'status': {
          const statuses = term.value.split(',').map((name) => {
            const status = BUILD_STATUSES.find((known) => known === name.toUpperCase());
            if (status === undefined) {
              throw new SearchSyntaxError(term.position, `one of ${BUILD_STATUSES.join(', ')} after 'status:'`, `found ${JSON.stringify(name)}`);
            }
            return status;
          });
          return statusesIn(statuses);
        }
        default: {
          const never: never = term.field;
          throw new Error(`unknown search field ${String(never)}`);
        }
      }
    default: {
      const never: never = term;
      throw new Error(`unknown search term ${String(never)}`);
    }
  }
}

/** The WHERE clause (without the keyword) and its parameters; `1` when nothing filters. */
export function compileFilters(filters: BuildFilters): { sql: string; params: unknown[] } {
  const parts: string[] = [];
  const params: unknown[] = [];
  const add = (part: { sql: string; params: unknown[] }, isNegated = false) => {
    // A field a build does not have (NULL) does not match, so its exclusion does.
    parts.push(isNegated ? `NOT coalesce((${part.sql}), 0)` : part.sql);
    params.push(...part.params);
  };
  if (filters.statuses !== undefined && filters.statuses.length > 0) add(statusesIn(filters.statuses));
  if (filters.jobName !== undefined) add({ sql: 'job_name = ? COLLATE NOCASE', params: [filters.jobName] });
  if (filters.branch !== undefined) add({ sql: 'branch = ? COLLATE NOCASE', params: [filters.branch] });
  if (filters.repository !== undefined) add(repositorySql(filters.repository));
  if (filters.createdAfter !== undefined) add({ sql: 'created_at > ?', params: [filters.createdAfter] });
  if (filters.createdBefore !== undefined) add({ sql: 'created_at < ?', params: [filters.createdBefore] });
  if (filters.isDone !== undefined) add(statusesIn(TERMINAL, !filters.isDone));
  if (filters.isFailed !== undefined) add(statusesIn(FAILED, !filters.isFailed));
  const matchColumn = keepsOnlyUnfinished(filters) ? '+id' : 'id';
  for (const term of filters.search ?? []) add(termSql(term, matchColumn), term.isNegated);
  return { sql: parts.length === 0 ? '1' : parts.join(' AND '), params };
}

/** The fields SPEC §11 adds to the build shape. */
export interface BuildIdentity {
  readonly created_at: number | null;
  readonly status_change_time: number | null;
  readonly repository: string | null;
  readonly repository_name: string | null;
  readonly branch: string | null;
  readonly commit_sha: string | null;
  readonly run_start_reason: string | null;
  readonly run_start_reason_url: string | null;
}

export interface BuildStats {
  readonly atoms: { readonly queued: number; readonly running: number; readonly passed: number; readonly failed: number; readonly canceled: number };
  readonly subjobs: { readonly queued: number; readonly running: number; readonly completed: number };
  readonly attempts: number;
}

export interface FailedAtomsPage {
  /** The first MAX_LISTED_FAILED_ATOMS failed atoms, in (subjob, atom) order. */
  readonly atoms: readonly AtomRecord[];
  readonly total: number;
}

interface FailedAtomRow {
  build_id: number;
  subjob_id: number;
  id: number;
  variable: string;
  value: string;
  state: AtomRecord['state'];
  exit_code: number | null;
  expected_time: number | null;
  actual_time: number | null;
  attempts: number;
  worker: string | null;
  stop_reason: AtomRecord['stopReason'];
  failed_attempts: number;
}

/** Dynamic filter SQL takes few shapes; preparing each once keeps a list query in microseconds of planning. */
const MAX_CACHED_STATEMENTS = 256;

export function createBuildQuery(db: Db) {
  const cache = new Map<string, Statement<unknown[]>>();
  const prepare = (sql: string) => {
    let statement = cache.get(sql);
    if (statement === undefined) {
      if (cache.size >= MAX_CACHED_STATEMENTS) cache.delete(cache.keys().next().value!);
      statement = db.prepare<unknown[]>(sql);
      cache.set(sql, statement);
    }
    return statement;
  };
  const selectIdentity = db.prepare<[number], BuildIdentity>(
    `SELECT f.created_at, t.status_change_time, f.repository, f.repository_name, f.branch, t.commit_sha, t.run_start_reason,
       t.run_start_reason_url
     FROM build_facts AS f JOIN build_text AS t ON t.id = f.id WHERE f.id = ?`,
  );
  const selectAtomStats = db.prepare<[number, number], { queued: number; running: number; passed: number; failed: number; canceled: number; attempts: number }>(
    `SELECT
       coalesce(sum(state = 'NOT_STARTED' AND NOT b.is_done), 0) AS queued,
       coalesce(sum(state = 'IN_PROGRESS' AND NOT b.is_done), 0) AS running,
       coalesce(sum(state = 'COMPLETED' AND exit_code = 0), 0) AS passed,
       coalesce(sum(state = 'COMPLETED' AND exit_code != 0 AND coalesce(stop_reason, '') != 'cancel'), 0) AS failed,
       coalesce(sum((state = 'COMPLETED' AND exit_code != 0 AND stop_reason = 'cancel') OR (state != 'COMPLETED' AND b.is_done)), 0) AS canceled,
       coalesce(sum(attempts), 0) AS attempts
     FROM atoms, (SELECT status IN (${TERMINAL.map((s) => `'${s}'`).join(', ')}) AS is_done FROM build_facts WHERE id = ?) AS b
     WHERE build_id = ?`,
  );
  const selectSubjobStats = db.prepare<[number], { queued: number; running: number; completed: number }>(
    `SELECT coalesce(sum(state = 'NOT_STARTED'), 0) AS queued, coalesce(sum(state = 'IN_PROGRESS'), 0) AS running,
       coalesce(sum(state = 'COMPLETED'), 0) AS completed
     FROM subjobs WHERE build_id = ?`,
  );
  // One read per build for its page of failed atoms, rather than one per atom.
  const selectFailed = db.prepare<[number, number], FailedAtomRow>(
    `SELECT build_id, subjob_id, id, variable, value, state, exit_code, expected_time, actual_time, attempts, worker, stop_reason,
       failed_attempts FROM atoms WHERE build_id = ? AND exit_code IS NOT NULL AND exit_code != 0 ORDER BY subjob_id, id LIMIT ?`,
  );
  const countFailed = db.prepare<[number], { total: number }>(
    'SELECT count(*) AS total FROM atoms WHERE build_id = ? AND exit_code IS NOT NULL AND exit_code != 0',
  );

  return {
    /** One page of matching build ids in id order, and how many match in all. */
    list(filters: BuildFilters, page: { order: ListOrder; offset: number; limit: number }): { ids: number[]; total: number } {
      const where = compileFilters(filters);
      const direction = page.order === 'desc' ? 'DESC' : 'ASC';
      if ((filters.search ?? []).some((term) => term.kind === 'text')) {
        // A text search costs most in the search index, once per query: take every matching id in one pass
        // (ids only, a few bytes each) rather than running it once for the page and again for the count.
        const all = prepare(`SELECT id FROM build_facts WHERE ${where.sql} ORDER BY id ${direction}`).pluck().all(...where.params) as number[];
        return { ids: all.slice(page.offset, page.offset + page.limit), total: all.length };
      }
      const ids = prepare(`SELECT id FROM build_facts WHERE ${where.sql} ORDER BY id ${direction} LIMIT ? OFFSET ?`)
        .pluck().all(...where.params, page.limit, page.offset) as number[];
      // A page shorter than asked, but not empty, tells the total without counting.
      const total = ids.length > 0 && ids.length < page.limit
        ? page.offset + ids.length
        : prepare(`SELECT count(*) FROM build_facts WHERE ${where.sql}`).pluck().get(...where.params) as number;
      return { ids, total };
    },

    /** The newest (highest id) matching build, or null. */
    latest(filters: BuildFilters): number | null {
      const where = compileFilters(filters);
      const id = prepare(`SELECT id FROM build_facts WHERE ${where.sql} ORDER BY id DESC LIMIT 1`).pluck().get(...where.params) as number | undefined;
      return id ?? null;
    },

    identity(buildId: number): BuildIdentity | null {
      return selectIdentity.get(buildId) ?? null;
    },

    stats(buildId: number): BuildStats {
      const atoms = selectAtomStats.get(buildId, buildId)!;
      const subjobs = selectSubjobStats.get(buildId)!;
      return {
        atoms: { queued: atoms.queued, running: atoms.running, passed: atoms.passed, failed: atoms.failed, canceled: atoms.canceled },
        subjobs: { queued: subjobs.queued, running: subjobs.running, completed: subjobs.completed },
        attempts: atoms.attempts,
      };
    },

    failedAtoms(buildId: number): FailedAtomsPage {
      const atoms = selectFailed.all(buildId, MAX_LISTED_FAILED_ATOMS).map((row): AtomRecord => ({
        buildId: row.build_id, subjobId: row.subjob_id, id: row.id, variable: row.variable, value: row.value, state: row.state,
        exitCode: row.exit_code, expectedTime: row.expected_time, actualTime: row.actual_time, attempts: row.attempts,
        worker: row.worker, stopReason: row.stop_reason, failedAttempts: row.failed_attempts,
      }));
      const total = atoms.length < MAX_LISTED_FAILED_ATOMS ? atoms.length : countFailed.get(buildId)!.total;
      return { atoms, total };
    },
  };
}

export type BuildQuery = ReturnType<typeof createBuildQuery>;
