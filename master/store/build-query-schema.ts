import type Database from 'better-sqlite3';

/**
 * The tables finding builds needs (SPEC §11), as named schema steps kept apart from the numbered migrations
 * of database.ts: a step runs once per database, recorded in `schema_steps`, and is never edited once
 * shipped (add a new step instead).
 *
 * - `build_facts`: one narrow row per build with what lists filter on, indexed. The builds rows carry the
 *   request and the job as JSON (hundreds of bytes each): a list that scanned or probed them would read
 *   ten times the pages.
 * - `build_text`: the identity fields lists show (status change time, commit, start reason) and the text a
 *   bare search word is matched against, with `build_search`, an FTS5 trigram index over that text.
 *
 * Triggers on `builds` keep both from what the build store already writes (the redacted request, the parsed
 * request, the job, the status), so every writer keeps them right without knowing they exist.
 */

const NOW = `((julianday('now') - 2440587.5) * 86400.0)`;

/** The repository as shown (credentials masked by the request redaction) of the row `r`; git builds only. */
const repository = (r: string) => `CASE WHEN ${r}.project_type = 'git' THEN json_extract(${r}.request_params, '$.url') END`;

/** The last path part of a repository URL without `.git`: `https://h/org/app.git/` and `git@h:org/app` ⇒ `app`. */
function repositoryName(url: string): string {
  const trimmed = `rtrim(${url}, '/')`;
  // rtrim(x, <every character of x but the separators>) leaves x up to its last separator.
  const last = `substr(${trimmed}, length(rtrim(${trimmed}, replace(replace(${trimmed}, '/', ''), ':', ''))) + 1)`;
  return `CASE WHEN ${last} LIKE '%.git' THEN substr(${last}, 1, length(${last}) - 4) ELSE ${last} END`;
}

const branch = (r: string) => `CASE WHEN ${r}.project_type = 'git' THEN json_extract(${r}.request, '$.branch') END`;
const commitSha = (r: string) => `CASE WHEN ${r}.project_type = 'git' THEN json_extract(${r}.job, '$.project.commit') END`;
const createdAt = (r: string) => `coalesce(json_extract(${r}.state_timestamps, '$.queued'), ${NOW})`;
const statusChangeTime = (r: string) =>
  `coalesce(json_extract(${r}.state_timestamps, '$.' || lower(${r}.status)), json_extract(${r}.state_timestamps, '$.queued'), ${NOW})`;
const reason = (r: string) => `json_extract(${r}.request_params, '$.run_start_reason')`;
const reasonUrl = (r: string) => `json_extract(${r}.request_params, '$.run_start_reason_url')`;

/** What a bare search word is matched against (SPEC §11): job, repository, branch, commit, start reason, error. */
const searchBody = (r: string) => [`${r}.job_name`, repository(r), branch(r), commitSha(r), reason(r), `${r}.error_message`]
  .map((part) => `coalesce(${part}, '')`).join(` || char(10) || `);

const insertFacts = (r: string) => `
  INSERT INTO build_facts (id, status, job_name, branch, repository, repository_name, created_at)
  SELECT ${r}.id, ${r}.status, ${r}.job_name, ${branch(r)}, ${repository(r)}, ${repositoryName(repository(r))}, ${createdAt(r)}`;
const insertText = (r: string) => `
  INSERT INTO build_text (id, status_change_time, commit_sha, run_start_reason, run_start_reason_url, body)
  SELECT ${r}.id, ${statusChangeTime(r)}, ${commitSha(r)}, ${reason(r)}, ${reasonUrl(r)}, ${searchBody(r)}`;

const STEPS: readonly { readonly name: string; readonly sql: string }[] = [
  {
    name: 'build-query-1',
    sql: `
      CREATE TABLE build_facts (
        id INTEGER PRIMARY KEY,
        status TEXT NOT NULL,
        job_name TEXT,
        branch TEXT,
        repository TEXT,
        repository_name TEXT,
        created_at REAL NOT NULL
      );
      -- Field matches ignore case (SPEC §11): NOCASE indexes serve them. Each ends in the id, so a filtered
      -- page in id order and its count read the index only.
      CREATE INDEX build_facts_by_status ON build_facts (status);
      CREATE INDEX build_facts_by_job_name ON build_facts (job_name COLLATE NOCASE);
      CREATE INDEX build_facts_by_branch ON build_facts (branch COLLATE NOCASE);
      CREATE INDEX build_facts_by_repository ON build_facts (repository COLLATE NOCASE);
      CREATE INDEX build_facts_by_repository_name ON build_facts (repository_name COLLATE NOCASE);
      CREATE INDEX build_facts_by_created_at ON build_facts (created_at);

      CREATE TABLE build_text (
        id INTEGER PRIMARY KEY,
        status_change_time REAL NOT NULL,
        commit_sha TEXT,
        run_start_reason TEXT,
        run_start_reason_url TEXT,
        body TEXT NOT NULL
      );
      -- Substring search through trigrams (three characters or more); shorter words scan build_text.
      CREATE VIRTUAL TABLE build_search USING fts5(body, content = 'build_text', content_rowid = 'id', tokenize = 'trigram');
      CREATE TRIGGER build_text_insert AFTER INSERT ON build_text BEGIN
        INSERT INTO build_search (rowid, body) VALUES (new.id, new.body);
      END;
      CREATE TRIGGER build_text_body AFTER UPDATE OF body ON build_text BEGIN
        INSERT INTO build_search (build_search, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO build_search (rowid, body) VALUES (new.id, new.body);
      END;
      CREATE TRIGGER build_text_delete AFTER DELETE ON build_text BEGIN
        INSERT INTO build_search (build_search, rowid, body) VALUES ('delete', old.id, old.body);
      END;

      ${insertFacts('b')} FROM builds AS b;
      ${insertText('b')} FROM builds AS b;

      CREATE TRIGGER builds_facts_insert AFTER INSERT ON builds BEGIN
        ${insertFacts('b')} FROM builds AS b WHERE b.id = new.id;
        ${insertText('b')} FROM builds AS b WHERE b.id = new.id;
      END;
      CREATE TRIGGER builds_facts_status AFTER UPDATE OF status ON builds WHEN old.status IS NOT new.status BEGIN
        UPDATE build_facts SET status = new.status WHERE id = new.id;
        UPDATE build_text SET status_change_time = (SELECT ${statusChangeTime('b')} FROM builds AS b WHERE b.id = new.id) WHERE id = new.id;
      END;
      CREATE TRIGGER builds_facts_job AFTER UPDATE OF job, job_name, error_message ON builds BEGIN
        UPDATE build_facts SET job_name = new.job_name WHERE id = new.id;
        UPDATE build_text SET (commit_sha, body) = (SELECT ${commitSha('b')}, ${searchBody('b')} FROM builds AS b WHERE b.id = new.id)
        WHERE id = new.id;
      END;
      CREATE TRIGGER builds_facts_delete AFTER DELETE ON builds BEGIN
        DELETE FROM build_facts WHERE id = old.id;
        DELETE FROM build_text WHERE id = old.id;
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
