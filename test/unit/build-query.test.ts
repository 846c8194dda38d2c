/**
 * Finding builds in SQL (SPEC §11) on a real SQLite file written through the build store: the identity
 * columns the schema step derives, every filter, every search form, latest, stats and the failed-atom cap.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Store } from '../../master/store/index.ts';
import { closeTempStores, openTempStore } from '../support/temp-store.ts';
import { MAX_LISTED_FAILED_ATOMS, compileFilters, createBuildQuery, type BuildFilters } from '../../master/store/build-query.ts';
import { SearchSyntaxError, parseBuildSearch } from '../../shared/api/build-search.ts';
import type { StoredJob } from '../../master/model/stored-job.ts';
import type { BuildStatus } from '../../master/model/build-status.ts';

afterEach(closeTempStores);

function openTestStore(): Store {
  return openTempStore('cr-query-').store;
}

const COMMIT = 'c0ffee'.padEnd(40, '0');

function job(name: string, commit: string | null): StoredJob {
  return {
    project: commit === null
      ? { type: 'directory', path: '/tmp/project' }
      : { type: 'git', url: 'https://example.com/org/app.git', branch: 'main', remote: 'origin', commit, subdirectory: null },
    remoteFiles: {}, timingKey: name, name, command: 'true', setupCommand: null, teardownCommand: null,
    maxExecutors: null, maxExecutorsPerWorker: null, atomTimeoutMs: null, retries: 0,
  };
}

interface Seed {
  readonly url?: string;
  readonly branch?: string;
  readonly jobName: string;
  readonly reason?: string;
  readonly status: BuildStatus;
  readonly error?: string;
  readonly commit?: string;
}

const PATH_TO: Record<BuildStatus, BuildStatus[]> = {
  QUEUED: [], PREPARING: ['PREPARING'], BUILDING: ['PREPARING', 'BUILDING'], SUCCESS: ['PREPARING', 'BUILDING', 'SUCCESS'],
  FAILURE: ['PREPARING', 'BUILDING', 'FAILURE'], ERROR: ['PREPARING', 'ERROR'], CANCELED: ['CANCELED'],
};

/** setStatus allows only legal moves: walk them in order. */
function seedAll(store: Store, builds: readonly Seed[]): number[] {
  return builds.map((build) => {
    const id = store.builds.insert({
      requestParams: build.url !== undefined
        ? { type: 'git', url: build.url, ...(build.branch ? { branch: build.branch } : {}), ...(build.reason ? { run_start_reason: build.reason } : {}) }
        : { type: 'directory', project_directory: '/tmp/project', ...(build.reason ? { run_start_reason: build.reason } : {}) },
      request: build.url !== undefined ? { type: 'git', url: build.url, branch: build.branch ?? 'master' } : { type: 'directory' },
      projectType: build.url !== undefined ? 'git' : 'directory',
      jobName: build.jobName,
      priority: 0,
    });
    for (const status of PATH_TO[build.status]) {
      if (status === 'BUILDING' || status === 'ERROR') {
        store.builds.setPrepared(id, {
          projectDir: '/tmp/project', job: job(build.jobName, build.url !== undefined ? build.commit ?? COMMIT : null), numAtoms: 1, numSubjobs: 1,
        });
      }
      store.builds.setStatus(id, status, status === 'ERROR' ? build.error ?? 'failed' : null);
    }
    return id;
  });
}

const HISTORY: Seed[] = [
  /* 1 */ { url: 'https://example.com/org/app.git', branch: 'main', jobName: 'Unit', status: 'SUCCESS', reason: 'nightly run' },
  /* 2 */ { url: 'https://example.com/org/app.git', branch: 'feature/x', jobName: 'Unit', status: 'FAILURE' },
  /* 3 */ { url: 'git@example.com:org/tools', branch: 'main', jobName: 'Lint', status: 'ERROR', error: 'clone failed: disk full' },
  /* 4 */ { jobName: 'Local', status: 'BUILDING', reason: 'PR #12' },
  /* 5 */ { url: 'https://example.com/org/app.git', branch: 'main', jobName: 'Integration', status: 'CANCELED' },
  /* 6 */ { url: 'https://example.com/org/app.git', branch: 'main', jobName: 'Unit', status: 'QUEUED' },
];

function ids(store: Store, filters: BuildFilters, order: 'asc' | 'desc' = 'asc'): number[] {
  return createBuildQuery(store.db).list(filters, { order, offset: 0, limit: 200 }).ids;
}

const search = (q: string): BuildFilters => ({ search: parseBuildSearch(q) });

describe('the identity columns', () => {
  it('are derived from what the build store writes', () => {
    const store = openTestStore();
    const [id] = seedAll(store, [{ url: 'https://u:***@example.com/org/app.git/', branch: 'dev', jobName: 'Unit', status: 'BUILDING', reason: 'nightly' }]);
    const identity = createBuildQuery(store.db).identity(id!);
    expect(identity).toEqual({
      created_at: expect.any(Number), status_change_time: expect.any(Number),
      repository: 'https://u:***@example.com/org/app.git/', repository_name: 'app', branch: 'dev', commit_sha: COMMIT,
      run_start_reason: 'nightly', run_start_reason_url: null,
    });
    const timestamps = store.builds.get(id!)!.stateTimestamps;
    expect(identity!.created_at).toBe(timestamps['queued']);
    expect(identity!.status_change_time).toBe(timestamps['building']);
  });

  it('name scp-like and extension-less repositories, and leave directory builds without git fields', () => {
    const store = openTestStore();
    const [scp, plain, local] = seedAll(store, [
      { url: 'git@example.com:org/tools', jobName: 'a', status: 'QUEUED' },
      { url: 'file:///srv/git/lib.git', jobName: 'b', status: 'QUEUED' },
      { jobName: 'c', status: 'QUEUED' },
    ]);
    const query = createBuildQuery(store.db);
    expect(query.identity(scp!)).toMatchObject({ repository: 'git@example.com:org/tools', repository_name: 'tools', branch: 'master', commit_sha: null });
    expect(query.identity(plain!)).toMatchObject({ repository_name: 'lib' });
    expect(query.identity(local!)).toMatchObject({ repository: null, repository_name: null, branch: null, commit_sha: null });
    expect(query.identity(999)).toBeNull();
  });
});

describe('list filters', () => {
  it('filter by status, job, branch and repository (URL or name), ignoring case', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    expect(ids(store, { statuses: ['FAILURE', 'ERROR'] })).toEqual([2, 3]);
    expect(ids(store, { jobName: 'unit' })).toEqual([1, 2, 6]);
    expect(ids(store, { branch: 'main' })).toEqual([1, 3, 5, 6]);
    expect(ids(store, { repository: 'APP' })).toEqual([1, 2, 5, 6]);
    expect(ids(store, { repository: 'https://example.com/org/app.git' })).toEqual([1, 2, 5, 6]);
    expect(ids(store, { repository: 'tools', branch: 'main' })).toEqual([3]);
    expect(ids(store, { jobName: 'Unit', statuses: ['SUCCESS'] })).toEqual([1]);
  });

  it('filter by creation time, exclusive at both ends', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    store.db.prepare('UPDATE build_facts SET created_at = 1000 + id * 10').run();
    expect(ids(store, { createdAfter: 1020 })).toEqual([3, 4, 5, 6]);
    expect(ids(store, { createdBefore: 1040 })).toEqual([1, 2, 3]);
    expect(ids(store, { createdAfter: 1010, createdBefore: 1040 })).toEqual([2, 3]);
  });

  it('order, page and count', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    const query = createBuildQuery(store.db);
    expect(query.list({}, { order: 'desc', offset: 0, limit: 2 })).toEqual({ ids: [6, 5], total: 6 });
    expect(query.list({}, { order: 'asc', offset: 4, limit: 2 })).toEqual({ ids: [5, 6], total: 6 });
    expect(query.list({}, { order: 'asc', offset: 5, limit: 2 })).toEqual({ ids: [6], total: 6 });
    expect(query.list({}, { order: 'asc', offset: 10, limit: 2 })).toEqual({ ids: [], total: 6 });
    expect(query.list({ jobName: 'Unit' }, { order: 'asc', offset: 0, limit: 0 })).toEqual({ ids: [], total: 3 });
  });

  it('latest: the newest match, with done and failed', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    const query = createBuildQuery(store.db);
    expect(query.latest({})).toBe(6);
    expect(query.latest({ isDone: true })).toBe(5);
    expect(query.latest({ isDone: false })).toBe(6);
    expect(query.latest({ isDone: false, jobName: 'local' })).toBe(4);
    expect(query.latest({ isFailed: true })).toBe(3);
    expect(query.latest({ isFailed: false, isDone: true })).toBe(5);
    expect(query.latest({ isFailed: true, branch: 'feature/x' })).toBe(2);
    expect(query.latest({ branch: 'nowhere' })).toBeNull();
  });
});

describe('search', () => {
  it('matches a bare word as a substring of job, repository, branch, commit, start reason or error, ignoring case', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    expect(ids(store, search('INTEGRAT'))).toEqual([5]);
    expect(ids(store, search('tools'))).toEqual([3]);
    expect(ids(store, search('feature'))).toEqual([2]);
    expect(ids(store, search('c0ffee'))).toEqual([1, 2, 3]);
    expect(ids(store, search('NIGHTLY'))).toEqual([1]);
    expect(ids(store, search('disk'))).toEqual([3]);
    expect(ids(store, search('#12'))).toEqual([4]);
    // Shorter than a trigram: scanned, same answer.
    expect(ids(store, search('/X'))).toEqual([2]);
    expect(ids(store, search('#1'))).toEqual([4]);
    expect(ids(store, search('%'))).toEqual([]);
  });

  it('matches a quoted phrase as one string, and ANDs every term', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    expect(ids(store, search('"disk full"'))).toEqual([3]);
    expect(ids(store, search('"full disk"'))).toEqual([]);
    expect(ids(store, search('"nightly run" unit'))).toEqual([1]);
    expect(ids(store, search('app main unit'))).toEqual([1, 6]);
  });

  it('excludes with -term and -key:value', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    expect(ids(store, search('app -unit'))).toEqual([5]);
    expect(ids(store, search('-branch:main'))).toEqual([2, 4]);
    expect(ids(store, search('-"disk full" -failed'))).toEqual([1, 4, 5, 6]);
  });

  it('matches repo:, branch:, job:, id: and status: on their field', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    expect(ids(store, search('repo:tools'))).toEqual([3]);
    expect(ids(store, search('repo:https://example.com/org/app.git'))).toEqual([1, 2, 5, 6]);
    expect(ids(store, search('branch:feature/x'))).toEqual([2]);
    expect(ids(store, search('job:unit'))).toEqual([1, 2, 6]);
    expect(ids(store, search('job:"Integration"'))).toEqual([5]);
    expect(ids(store, search('id:4'))).toEqual([4]);
    expect(ids(store, search('status:success'))).toEqual([1]);
    expect(ids(store, search('status:Failure,CANCELED'))).toEqual([2, 5]);
  });

  it('matches running, done and failed by state', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    expect(ids(store, search('running'))).toEqual([4, 6]);
    expect(ids(store, search('done'))).toEqual([1, 2, 3, 5]);
    expect(ids(store, search('failed'))).toEqual([2, 3]);
    expect(ids(store, search('-running -failed'))).toEqual([1, 5]);
  });

  it('reads the few unfinished builds, not every text match, when a search keeps running builds only', () => {
    const store = openTestStore();
    seedAll(store, HISTORY);
    expect(ids(store, search('unit running'))).toEqual([6]);
    expect(ids(store, search('app -feature running'))).toEqual([6]);
    expect(ids(store, { statuses: ['BUILDING'], search: parseBuildSearch('pr') })).toEqual([4]);
    expect(ids(store, search('unit status:queued,building'))).toEqual([6]);
    expect(ids(store, search('unit -running'))).toEqual([1, 2]);
    const plan = (filters: BuildFilters) => {
      const where = compileFilters(filters);
      return (store.db.prepare(`EXPLAIN QUERY PLAN SELECT id FROM build_facts WHERE ${where.sql} ORDER BY id DESC`).all(...where.params) as { detail: string }[])
        .map((row) => row.detail).join('\n');
    };
    // Walking a common word's 28,000 matches of a 100,000-build history to probe each took 24 ms (bench/lists.ts).
    for (const q of ['unit running', 'app -feature running', 'unit status:queued,building']) {
      expect(plan(search(q)), q).toMatch(/^SEARCH build_facts USING (COVERING )?INDEX \S+ \(status=\?\)$/m);
    }
    // Finished builds are most of a history: there the matches lead.
    expect(plan(search('unit done'))).not.toMatch(/\(status=\?\)$/m);
  });

  it('refuses an unknown status and a non-numeric id, naming the position', () => {
    const store = openTestStore();
    const query = createBuildQuery(store.db);
    const refusal = (q: string) => {
      try {
        query.list(search(q), { order: 'asc', offset: 0, limit: 20 });
      } catch (error) {
        expect(error).toBeInstanceOf(SearchSyntaxError);
        return (error as SearchSyntaxError).message;
      }
      throw new Error('not refused');
    };
    expect(refusal('unit status:done')).toBe('Query parameter q: at position 5, expected one of QUEUED, PREPARING, BUILDING, SUCCESS, ' +
      'FAILURE, ERROR, CANCELED after \'status:\' (found "done").');
    expect(refusal('-id:four')).toBe('Query parameter q: at position 0, expected a build id (digits) after \'id:\' (found "four").');
  });

  it('follows a build as it changes: the job name, the commit and the error become searchable', () => {
    const store = openTestStore();
    const [id] = seedAll(store, [{ url: 'https://example.com/org/app.git', jobName: 'Smoke', status: 'QUEUED' }]);
    store.db.prepare('UPDATE builds SET job_name = NULL').run();
    expect(ids(store, search('smoke'))).toEqual([]);
    expect(ids(store, search('abababab'))).toEqual([]);
    store.builds.setStatus(id!, 'PREPARING');
    store.builds.setPrepared(id!, { projectDir: '/p', job: job('Smoke', 'ab'.repeat(20)), numAtoms: 1, numSubjobs: 1 });
    expect(ids(store, search('smoke abababab'))).toEqual([id]);
    store.builds.setStatus(id!, 'ERROR', 'setup failed on every worker');
    expect(ids(store, search('"every worker"'))).toEqual([id]);
    store.db.prepare('DELETE FROM builds WHERE id = ?').run(id);
    expect(ids(store, search('smoke'))).toEqual([]);
    expect(store.db.prepare(`SELECT count(*) AS n FROM build_search WHERE build_search MATCH '"smoke"'`).get()).toEqual({ n: 0 });
    expect(store.db.prepare('SELECT (SELECT count(*) FROM build_facts) + (SELECT count(*) FROM build_text) AS n').get()).toEqual({ n: 0 });
  });
});

describe('stats and failed atoms', () => {
  it('count atoms and subjobs by state for a running and a finished build', () => {
    const store = openTestStore();
    const [id] = seedAll(store, [{ jobName: 'Unit', status: 'BUILDING' }]);
    store.atoms.insertPlan(id!, [
      { id: 0, atoms: [{ id: 0, variable: 'X', value: '0', expectedTime: null }, { id: 1, variable: 'X', value: '1', expectedTime: null }] },
      { id: 1, atoms: [{ id: 0, variable: 'X', value: '2', expectedTime: null }] },
      { id: 2, atoms: [{ id: 0, variable: 'X', value: '3', expectedTime: null }] },
    ]);
    const query = createBuildQuery(store.db);
    store.atoms.markStarted(id!, 0, 0, 'w1');
    store.atoms.markFinished(id!, 0, 0, 0, 0.1, null);
    store.atoms.markStarted(id!, 0, 1, 'w1');
    store.atoms.setSubjobState(id!, 0, 'IN_PROGRESS', 'w1');
    store.atoms.markStarted(id!, 1, 0, 'w2');
    store.atoms.markFinished(id!, 1, 0, 3, 0.1, null);
    store.atoms.markStarted(id!, 1, 0, 'w2');
    store.atoms.markFinished(id!, 1, 0, 3, 0.1, null);
    store.atoms.setSubjobState(id!, 1, 'COMPLETED');
    expect(query.stats(id!)).toEqual({
      atoms: { queued: 1, running: 1, passed: 1, failed: 1, canceled: 0 },
      subjobs: { queued: 1, running: 1, completed: 1 },
      attempts: 4,
    });
    store.atoms.markFinished(id!, 0, 1, 143, 0.1, 'cancel');
    store.builds.setStatus(id!, 'CANCELED');
    expect(query.stats(id!)).toEqual({
      atoms: { queued: 0, running: 0, passed: 1, failed: 1, canceled: 2 },
      subjobs: { queued: 1, running: 1, completed: 1 },
      attempts: 4,
    });
  });

  it(`cap a list's failed atoms at ${MAX_LISTED_FAILED_ATOMS} and count them all`, () => {
    const store = openTestStore();
    const [id] = seedAll(store, [{ jobName: 'Unit', status: 'BUILDING' }]);
    const atoms = Array.from({ length: 150 }, (_, i) => ({ id: i, variable: 'X', value: String(i), expectedTime: null }));
    store.atoms.insertPlan(id!, [{ id: 0, atoms }]);
    for (const atom of atoms) {
      store.atoms.markStarted(id!, 0, atom.id, 'w');
      store.atoms.markFinished(id!, 0, atom.id, atom.id === 7 ? 0 : 1, 0.1, null);
    }
    const page = createBuildQuery(store.db).failedAtoms(id!);
    expect(page.total).toBe(149);
    expect(page.atoms).toHaveLength(MAX_LISTED_FAILED_ATOMS);
    expect(page.atoms.slice(6, 8).map((atom) => atom.id)).toEqual([6, 8]);
    expect(page.atoms[0]).toEqual(store.atoms.getAtom(id!, 0, 0));
  });
});
