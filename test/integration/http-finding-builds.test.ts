/**
 * Finding builds (SPEC §11) through the real API of a real master with real workers: start reasons and git
 * identity in every view, filtered and searched lists with next and total, every search form and every
 * 400, latest with each filter, stats for a running and a finished build, and capped failed atoms.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { createRepo } from '../support/git-repo.ts';
import { expectFailure } from '../support/http-expect.ts';

afterEach(cleanupAll);

const passing = (atoms: number) => ({ commands: ['echo "atom $N"'], atomizers: [{ N: `seq 1 ${atoms}` }] });
const failing = (atoms: number) => ({ commands: ['exit 3'], atomizers: [{ N: `seq 1 ${atoms}` }] });

async function list(master: TestMaster, query: string): Promise<{ ids: number[]; body: any }> {
  const response = await api(master, 'GET', `/v2/builds${query}`);
  expect(response.status, response.text).toBe(200);
  return { ids: response.body.builds.map((build: any) => build.id), body: response.body };
}

async function latest(master: TestMaster, query: string): Promise<number | null> {
  const response = await api(master, 'GET', `/v2/builds/latest${query}`);
  if (response.status === 404) return null;
  expect(response.status, response.text).toBe(200);
  return response.body.build.id;
}

/**
 * A small history on one master: two git builds from a real repository (main and feature), a passing, a
 * failing and a canceled directory build, each with a start reason or not.
 */
async function seedHistory() {
  const master = await startTestMaster();
  await startTestWorker(master, { executors: 4 });
  const repo = createRepo({ 'clusterrunner.yaml': 'Unit:\n  commands:\n    - echo "unit $N"\n  atomizers:\n    - N: seq 1 2\n' });
  const mainCommit = repo.head();
  repo.git('checkout', '-q', '-b', 'feature/login');
  const featureCommit = repo.commit({ 'clusterrunner.yaml': 'Unit:\n  commands:\n    - exit 1\n  atomizers:\n    - N: seq 1 2\n' });
  repo.git('checkout', '-q', 'master');
  const dir = tempDir();
  const ids = {
    gitMain: await postBuild(master, { type: 'git', url: repo.dir, job_name: 'Unit', run_start_reason: 'push to master',
      run_start_reason_url: 'https://ci.example.com/push/1' }),
    gitFeature: await postBuild(master, { type: 'git', url: repo.dir, branch: 'feature/login', job_name: 'Unit', run_start_reason: 'PR #42 opened' }),
    passing: await postBuild(master, { type: 'directory', project_directory: dir, job_name: 'Docs', config: passing(2) }),
    failing: await postBuild(master, { type: 'directory', project_directory: dir, job_name: 'Lint', config: failing(2), run_start_reason: 'nightly' }),
  };
  // A loaded machine can take a while over git builds: wait long, and say which build ended how.
  const ended = [];
  for (const id of Object.values(ids)) ended.push((await waitForBuild(master, id, undefined, 150_000)).status);
  expect(ended).toEqual(['SUCCESS', 'FAILURE', 'SUCCESS', 'FAILURE']);
  const created = (await api(master, 'GET', `/v2/builds/${ids.failing}`)).body.build.created_at as number;
  // Not terminal until canceled: a build that waits on a file that never comes.
  const canceled = await postBuild(master, { type: 'directory', project_directory: dir, job_name: 'Slow',
    config: { commands: ['sleep 30'], atomizers: [{ N: 'seq 1 1' }] } });
  await waitForBuild(master, canceled, (b) => b.status === 'BUILDING', 150_000);
  expect((await api(master, 'PUT', `/v1/build/${canceled}`, { json: { status: 'canceled' } })).status).toBe(200);
  await waitForBuild(master, canceled, undefined, 150_000);
  return { master, repo, mainCommit, featureCommit, ids: { ...ids, canceled }, createdBeforeCanceled: created };
}

describe('start reasons and git identity', () => {
  it('are stored with the build and shown in every view (v1, v2, lists, latest)', async () => {
    const { master, repo, mainCommit, featureCommit, ids } = await seedHistory();
    const v1 = (await api(master, 'GET', `/v1/build/${ids.gitMain}`)).body.build;
    expect(v1).toMatchObject({
      status: 'SUCCESS', repository: repo.dir, repository_name: repo.dir.split('/').at(-1), branch: 'master', commit_sha: mainCommit,
      run_start_reason: 'push to master', run_start_reason_url: 'https://ci.example.com/push/1',
    });
    expect(v1.created_at).toBe(v1.state_timestamps.queued);
    expect(v1.status_change_time).toBe(v1.state_timestamps.success);
    const v2 = (await api(master, 'GET', `/v2/builds/${ids.gitFeature}`)).body;
    expect(v2.build).toMatchObject({ status: 'FAILURE', branch: 'feature/login', commit_sha: featureCommit, run_start_reason: 'PR #42 opened', run_start_reason_url: null });
    expect(v2.child_routes).toMatchObject({ stats: '/v2/builds/[build_id]/stats', attachments: '/v2/builds/[build_id]/attachments' });
    const local = (await api(master, 'GET', `/v1/build/${ids.failing}`)).body.build;
    expect(local).toMatchObject({ repository: null, repository_name: null, branch: null, commit_sha: null, run_start_reason: 'nightly' });
    const listed = (await list(master, `?q=id:${ids.gitMain}`)).body.builds[0];
    expect(listed).toMatchObject({ commit_sha: mainCommit, run_start_reason: 'push to master', num_failed_atoms: 0, failed_atoms: [] });
  }, 600_000);

  it('refuses start reasons that are not strings, too long, or not http(s) URLs, naming the field', async () => {
    const master = await startTestMaster();
    const dir = tempDir();
    const post = (extra: Record<string, unknown>) => api(master, 'POST', '/v1/build', { json: { type: 'directory', project_directory: dir, config: passing(1), ...extra } });
    expectFailure(await post({ run_start_reason: 7 }), 400, /"run_start_reason" must be a string/);
    expectFailure(await post({ run_start_reason: 'é'.repeat(513) }), 400, /"run_start_reason" must be at most 1024 bytes/);
    expectFailure(await post({ run_start_reason_url: 'javascript:alert(1)' }), 400, /"run_start_reason_url" must be an http\(s\) URL/);
    expectFailure(await post({ run_start_reason_url: `https://x.example/${'a'.repeat(1024)}` }), 400, /"run_start_reason_url" must be at most 1024 bytes/);
    expect((await post({ run_start_reason: 'é'.repeat(512) })).status).toBe(202);
  });
});

describe('GET /v2/builds with filters, order, next and total', () => {
  it('filters, orders and pages, with next links that keep the filters', async () => {
    const { master, repo, ids, createdBeforeCanceled } = await seedHistory();
    const all = [ids.gitMain, ids.gitFeature, ids.passing, ids.failing, ids.canceled];
    expect((await list(master, '')).body).toMatchObject({ total: 5, next: null, child_routes: { build: '/v2/builds/[build_id]', latest: '/v2/builds/latest' } });
    expect((await list(master, '?order=desc')).ids).toEqual([...all].reverse());
    expect((await list(master, '?status=failure,Canceled')).ids).toEqual([ids.gitFeature, ids.failing, ids.canceled]);
    expect((await list(master, '?job_name=unit')).ids).toEqual([ids.gitMain, ids.gitFeature]);
    expect((await list(master, `?branch=${encodeURIComponent('feature/login')}`)).ids).toEqual([ids.gitFeature]);
    expect((await list(master, `?repository=${encodeURIComponent(repo.dir)}`)).ids).toEqual([ids.gitMain, ids.gitFeature]);
    expect((await list(master, `?repository=${repo.dir.split('/').at(-1)}&branch=master`)).ids).toEqual([ids.gitMain]);
    expect((await list(master, `?created_after=${createdBeforeCanceled}`)).ids).toEqual([ids.canceled]);
    expect((await list(master, `?created_before=${createdBeforeCanceled}&order=desc`)).ids).toEqual([ids.passing, ids.gitFeature, ids.gitMain]);

    const first = await list(master, '?status=SUCCESS,FAILURE,CANCELED&order=desc&limit=2');
    expect(first.ids).toEqual([ids.canceled, ids.failing]);
    expect(first.body.total).toBe(5);
    expect(first.body.next).toBe('/v2/builds?status=SUCCESS%2CFAILURE%2CCANCELED&order=desc&offset=2&limit=2');
    const second = await list(master, first.body.next.slice('/v2/builds'.length));
    expect(second.ids).toEqual([ids.passing, ids.gitFeature]);
    const third = await list(master, second.body.next.slice('/v2/builds'.length));
    expect(third.ids).toEqual([ids.gitMain]);
    expect(third.body.next).toBeNull();
    expect((await list(master, '?offset=10')).body).toMatchObject({ builds: [], total: 5, next: null });
  }, 600_000);

  it('searches with every form of q', async () => {
    const { master, repo, featureCommit, ids } = await seedHistory();
    const q = async (text: string) => (await list(master, `?q=${encodeURIComponent(text)}`)).ids;
    const name = repo.dir.split('/').at(-1)!;
    expect(await q('')).toHaveLength(5);
    expect(await q('LINT')).toEqual([ids.failing]);
    expect(await q('ightl')).toEqual([ids.failing]);
    expect(await q(featureCommit.slice(0, 10))).toEqual([ids.gitFeature]);
    expect(await q('"PR #42"')).toEqual([ids.gitFeature]);
    expect(await q('#4')).toEqual([ids.gitFeature]);
    expect(await q('unit -login')).toEqual([ids.gitMain]);
    expect(await q(`repo:${name}`)).toEqual([ids.gitMain, ids.gitFeature]);
    expect(await q(`repo:"${repo.dir}" -branch:master`)).toEqual([ids.gitFeature]);
    expect(await q('branch:feature/login')).toEqual([ids.gitFeature]);
    expect(await q('job:docs')).toEqual([ids.passing]);
    expect(await q(`id:${ids.failing}`)).toEqual([ids.failing]);
    expect(await q('status:canceled')).toEqual([ids.canceled]);
    expect(await q('-status:success,failure')).toEqual([ids.canceled]);
    expect(await q('failed')).toEqual([ids.gitFeature, ids.failing]);
    expect(await q('done -failed')).toEqual([ids.gitMain, ids.passing, ids.canceled]);
    expect(await q('running')).toEqual([]);
  }, 600_000);

  it('answers 400 naming the parameter, the position and what was expected', async () => {
    const master = await startTestMaster();
    const get = (query: string) => api(master, 'GET', `/v2/builds${query}`);
    expectFailure(await get(`?q=${encodeURIComponent('unit owner:bob')}`), 400,
      /^Query parameter q: at position 5, expected one of the keys repo:, branch:, job:, id:, status: \(unknown key 'owner:'/);
    expectFailure(await get(`?q=${encodeURIComponent('"unterminated')}`), 400,
      'Query parameter q: at position 13, expected a closing \'"\' (the quote opened at position 0 is not closed).');
    expectFailure(await get(`?q=${encodeURIComponent('status:done')}`), 400, /^Query parameter q: at position 0, expected one of QUEUED, .* \(found "done"\)/);
    expectFailure(await get(`?q=${encodeURIComponent('id:x')}`), 400, /at position 0, expected a build id/);
    expectFailure(await get(`?q=${encodeURIComponent('branch:')}`), 400, /at position 7, expected a value after 'branch:'/);
    expectFailure(await get(`?q=${encodeURIComponent('a -')}`), 400, /at position 3, expected a term after '-'/);
    expectFailure(await get('?q=a&q=b'), 400, /q must be given once/);
    expectFailure(await get('?status=DONE'), 400, /Query parameter status: unknown build status "DONE"; known: QUEUED/);
    expectFailure(await get('?status='), 400, /status must not be empty/);
    expectFailure(await get('?order=newest'), 400, 'Query parameter order must be asc or desc, not "newest".');
    expectFailure(await get('?created_after=yesterday'), 400, /created_after must be a number/);
    expectFailure(await get('?limit=ten'), 400, /limit must be an integer/);
    expectFailure(await get('?colour=red'), 400, /^Unknown query parameter "colour"/);
    expectFailure(await get('?done=true'), 400, /^Unknown query parameter "done"/);
  });
});

describe('GET /v2/builds/latest', () => {
  it('answers the newest build matching each filter, or 404', async () => {
    const { master, repo, ids, createdBeforeCanceled } = await seedHistory();
    expect(await latest(master, '')).toBe(ids.canceled);
    expect(await latest(master, '?done=false')).toBeNull();
    expect(await latest(master, '?done=true&failed=false')).toBe(ids.canceled);
    expect(await latest(master, '?failed=true')).toBe(ids.failing);
    expect(await latest(master, '?status=SUCCESS')).toBe(ids.passing);
    expect(await latest(master, '?job_name=Unit')).toBe(ids.gitFeature);
    expect(await latest(master, '?branch=master')).toBe(ids.gitMain);
    expect(await latest(master, `?repository=${encodeURIComponent(repo.dir)}&failed=false`)).toBe(ids.gitMain);
    expect(await latest(master, `?created_before=${createdBeforeCanceled}`)).toBe(ids.passing);
    expect(await latest(master, `?created_after=${createdBeforeCanceled}`)).toBe(ids.canceled);
    expect(await latest(master, `?q=${encodeURIComponent('"PR #42"')}`)).toBe(ids.gitFeature);
    expect(await latest(master, '?job_name=nope')).toBeNull();
    expectFailure(await api(master, 'GET', '/v2/builds/latest?job_name=nope'), 404, 'No build matches these filters.');
    expectFailure(await api(master, 'GET', '/v2/builds/latest?done=yes'), 400, 'Query parameter done must be true or false, not "yes".');
    expectFailure(await api(master, 'GET', '/v2/builds/latest?offset=1'), 400, /^Unknown query parameter "offset"/);
    expectFailure(await api(master, 'PUT', '/v2/builds/latest', { json: {} }), 405);
    const shown = (await api(master, 'GET', '/v2/builds/latest?failed=true')).body.build;
    expect(shown).toMatchObject({ id: ids.failing, status: 'FAILURE', num_failed_atoms: 2, job_name: 'Lint' });
    expect(shown.failed_atoms).toHaveLength(2);
  }, 600_000);
});

describe('GET /v2/builds/:id/stats', () => {
  it('counts atoms, subjobs and attempts for a running and then a finished build', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const dir = tempDir();
    const gate = join(dir, 'gate');
    // Atom 1 passes, atom 2 fails, atoms 3 and 4 wait for the gate; two executors, so one of them waits queued.
    const config = {
      commands: ['if [ "$N" = 1 ]; then exit 0; elif [ "$N" = 2 ]; then exit 5; else while [ ! -e "$GATE" ]; do sleep 0.05; done; fi'],
      atomizers: [{ N: 'seq 1 4' }],
      max_executors: 2,
    };
    const id = await postBuild(master, { type: 'directory', project_directory: dir, config: { ...config, commands: [`GATE=${gate}; ${config.commands[0]}`] } });
    const running = await eventually('two atoms done and one running', async () => {
      const stats = (await api(master, 'GET', `/v2/builds/${id}/stats`)).body.stats;
      return stats?.atoms.passed === 1 && stats.atoms.failed === 1 && stats.atoms.running === 2 ? stats : null;
    });
    expect(running).toEqual({ atoms: { queued: 0, running: 2, passed: 1, failed: 1, canceled: 0 }, subjobs: expect.any(Object), attempts: 4 });
    expect(running.subjobs.queued + running.subjobs.running + running.subjobs.completed).toBe(4);
    expect(running.subjobs.completed).toBe(2);
    writeFileSync(gate, '');
    await waitForBuild(master, id);
    const finished = await api(master, 'GET', `/v2/builds/${id}/stats`);
    expect(finished.status).toBe(200);
    expect(finished.body).toEqual({
      stats: { atoms: { queued: 0, running: 0, passed: 3, failed: 1, canceled: 0 }, subjobs: { queued: 0, running: 0, completed: 4 }, attempts: 4 },
      child_routes: {},
    });
    expectFailure(await api(master, 'GET', '/v2/builds/999/stats'), 404, 'Invalid build id: 999.');
    expectFailure(await api(master, 'GET', '/v2/builds/x/stats'), 400, /build id must be a non-negative integer/);
    expect(existsSync(gate)).toBe(true);
  });
});

describe('failed_atoms in lists', () => {
  it('shows the first 100 with num_failed_atoms beside them; the build itself shows all', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 4 });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: failing(105) });
    await waitForBuild(master, id, undefined, 120_000);
    const listed = (await list(master, '')).body.builds[0];
    expect(listed.num_failed_atoms).toBe(105);
    expect(listed.failed_atoms).toHaveLength(100);
    const whole = (await api(master, 'GET', `/v2/builds/${id}`)).body.build;
    expect(whole.failed_atoms).toHaveLength(105);
    expect(listed.failed_atoms).toEqual(whole.failed_atoms.slice(0, 100));
  }, 180_000);
});
