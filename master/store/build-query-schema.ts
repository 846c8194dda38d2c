import type Database from 'better-sqlite3';

/**
 * The columns, indexes and search table that finding builds needs (SPEC §11), as named schema steps kept
 * apart from the numbered migrations of database.ts: a step runs once per database, recorded in
 * `schema_steps`, and is never edited once shipped (add a new step instead).
 *
 * The derived columns are kept by triggers from what the build store already writes (the redacted request,
 * the parsed request, the job, the status), so every writer keeps them right without knowing they exist,
 * and a list query is plain indexed SQL.
 */

/** The last path part of a repository URL without `.git`: `https://h/org/app.git/` and `git@h:org/app` ⇒ `app`. */
function repositoryNameSql(url: string): string {
  const trimmed = `rtrim(${url}, '/')`;
  // rtrim(x, <every character of x but the separators>) leaves x up to its last separator.
  const last = `substr(${trimmed}, length(rtrim(${trimmed}, replace(replace(${trimmed}, '/', ''), ':', ''))) + 1)`;
  return `CASE WHEN ${last} LIKE '%.git' THEN substr(${last}, 1, length(${last}) - 4) ELSE ${last} END`;
}

/** What a bare search word is matched against (SPEC §11): job, repository, branch, commit, start reason, error. */
const SEARCH_BODY = `coalesce(job_name, '') || char(10) || coalesce(repository, '') || char(10) || coalesce(branch, '') || char(10) ||
  coalesce(commit_sha, '') || char(10) || coalesce(run_start_reason, '') || char(10) || coalesce(error_message, '')`;

const REPOSITORY = `CASE WHEN project_type = 'git' THEN json_extract(request_params, '$.url') END`;
const NOW = `((julianday('now') - 2440587.5) * 86400.0)`;

/** Sets the derived columns of the rows `where` selects from what the build store wrote. */
function deriveSql(where: string): string {
  return `
    UPDATE builds SET
      created_at = coalesce(json_extract(state_timestamps, '$.queued'), ${NOW}),
      status_change_time = coalesce(json_extract(state_timestamps, '$.' || lower(status)), json_extract(state_timestamps, '$.queued'), ${NOW}),
      repository = ${REPOSITORY},
      repository_name = ${repositoryNameSql(REPOSITORY)},
      branch = CASE WHEN project_type = 'git' THEN json_extract(request, '$.branch') END,
      commit_sha = CASE WHEN project_type = 'git' THEN json_extract(job, '$.project.commit') END,
      run_start_reason = json_extract(request_params, '$.run_start_reason'),
      run_start_reason_url = json_extract(request_params, '$.run_start_reason_url')
    WHERE ${where};`;
}

const STEPS: readonly { readonly name: string; readonly sql: string }[] = [
  {
    name: 'build-query-1',
    sql: `
      ALTER TABLE builds ADD COLUMN created_at REAL;
      ALTER TABLE builds ADD COLUMN status_change_time REAL;
      ALTER TABLE builds ADD COLUMN repository TEXT;
      ALTER TABLE builds ADD COLUMN repository_name TEXT;
      ALTER TABLE builds ADD COLUMN branch TEXT;
      ALTER TABLE builds ADD COLUMN commit_sha TEXT;
      ALTER TABLE builds ADD COLUMN run_start_reason TEXT;
      ALTER TABLE builds ADD COLUMN run_start_reason_url TEXT;
      ${deriveSql('1')}

      -- Field matches are case-insensitive (SPEC §11); NOCASE indexes serve them, each ending in the rowid so
      -- that a filtered page in id order reads only its rows.
      CREATE INDEX builds_by_job_name ON builds(job_name COLLATE NOCASE);
      CREATE INDEX builds_by_branch ON builds(branch COLLATE NOCASE);
      CREATE INDEX builds_by_repository ON builds(repository COLLATE NOCASE);
      CREATE INDEX builds_by_repository_name ON builds(repository_name COLLATE NOCASE);
      CREATE INDEX builds_by_created_at ON builds(created_at);

      -- Substring search of any length >= 3 through trigrams; shorter words scan this table's text.
      CREATE VIRTUAL TABLE build_search USING fts5(body, tokenize = 'trigram');
      INSERT INTO build_search (rowid, body) SELECT id, ${SEARCH_BODY} FROM builds;

      CREATE TRIGGER builds_derive_insert AFTER INSERT ON builds BEGIN
        ${deriveSql('id = new.id')}
        INSERT INTO build_search (rowid, body) SELECT id, ${SEARCH_BODY} FROM builds WHERE id = new.id;
      END;
      CREATE TRIGGER builds_derive_status AFTER UPDATE OF status ON builds WHEN old.status IS NOT new.status BEGIN
        UPDATE builds SET status_change_time = coalesce(json_extract(new.state_timestamps, '$.' || lower(new.status)), ${NOW})
        WHERE id = new.id;
      END;
      CREATE TRIGGER builds_derive_job AFTER UPDATE OF job ON builds BEGIN
        UPDATE builds SET commit_sha = CASE WHEN project_type = 'git' THEN json_extract(new.job, '$.project.commit') END
        WHERE id = new.id;
        UPDATE build_search SET body = (SELECT ${SEARCH_BODY} FROM builds WHERE id = new.id) WHERE rowid = new.id;
      END;
      CREATE TRIGGER builds_derive_search AFTER UPDATE OF job_name, error_message ON builds BEGIN
        UPDATE build_search SET body = (SELECT ${SEARCH_BODY} FROM builds WHERE id = new.id) WHERE rowid = new.id;
      END;
      CREATE TRIGGER builds_derive_delete AFTER DELETE ON builds BEGIN
        DELETE FROM build_search WHERE rowid = old.id;
      END;
    `,
  },
];

/** Runs the steps this database has not run yet; called by openDatabase after its migrations. */
export function applyBuildQuerySchema(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_steps (name TEXT PRIMARY KEY, applied_at REAL NOT NULL) WITHOUT ROWID');
  const isApplied = db.prepare<[string], { name: string }>('SELECT name FROM schema_steps WHERE name = ?');
  const record = db.prepare(`INSERT INTO schema_steps (name, applied_at) VALUES (?, ${NOW})`);
  for (const step of STEPS) {
    if (isApplied.get(step.name)) continue;
    db.transaction(() => {
      db.exec(step.sql);
      record.run(step.name);
    })();
  }
}
