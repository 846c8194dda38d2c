/**
 * Attempts and retry (SPEC §10) through the real API, against real masters and workers: every run of an
 * atom is an attempt with its own console output; a finished build's failed atoms run again in the same
 * build; what cannot be retried gets 409.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { createRepo } from '../support/git-repo.ts';
import { atomsOf, downloadArtifacts, listFiles, readText } from '../support/build-results.ts';

afterEach(cleanupAll);

const TEST_TIMEOUT_MS = 90_000;
/**
 * The tests count attempts exactly: a worker declared lost (its heartbeats late on a loaded machine) would add
 * a worker_lost attempt. 50 missed 200 ms beats (10 s), the worker's own threshold sent at registration, keeps it alive through a busy spell.
 */
const HEARTBEAT_FAILURE_THRESHOLD = 50;
const BUILD_WAIT_MS = 60_000;

/** A directory project with this clusterrunner.yaml. */
function project(yaml: string): string {
  const dir = tempDir('cr-retry-project-');
  writeFileSync(join(dir, 'clusterrunner.yaml'), yaml);
  return dir;
}

/** Atom N=2 fails until the file `fixed` exists; every run prints which run of it this is. */
function fixableJob(fixed: string, extra = ''): string {
  return [
    'Fixable:',
    `  commands:`,
    `    - echo "run of $N" >> runs-$N; echo "run $(wc -l < runs-$N) of atom $N"; if [ "$N" = 2 ] && [ ! -e ${fixed} ]; then exit 3; fi; echo "ok $N" > $ARTIFACT_DIR/out.txt`,
    '  atomizers:',
    '    - N: seq 1 2',
    extra,
  ].join('\n');
}

async function eventsOf(master: { url: string; secret: string }, buildId: number, tag: string): Promise<any[]> {
  const events = (await api(master, 'GET', '/v1/eventlog')).body.events as any[];
  return events.filter((event) => event.__tag__ === tag && event.build_id === buildId);
}

describe('attempts', () => {
  it('an atom that fails once then passes with retries: 1 has 2 attempts, is flaky, and both consoles are readable', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    const marker = join(tempDir('cr-flaky-'), 'failed-once');
    const dir = project([
      'Flaky:',
      '  retries: 1',
      '  commands:',
      `    - if [ ! -e ${marker} ]; then touch ${marker}; echo "first try"; exit 5; fi; echo "second try"`,
      '  atomizers:',
      '    - N: echo 1',
      '',
    ].join('\n'));
    const buildId = await postBuild(master, { type: 'directory', project_directory: dir });
    const build = await waitForBuild(master, buildId, undefined, BUILD_WAIT_MS);
    expect(build.status).toBe('SUCCESS');

    const atom = (await api(master, 'GET', `/v1/build/${buildId}/subjob/0/atom/0`)).body;
    expect(atom.atom).toMatchObject({ attempts: 2, flaky: true, exit_code: 0, state: 'COMPLETED', stop_reason: null });
    expect(atom.atom.worker).toMatch(/^test-worker-/);
    expect(atom.child_routes.attempts).toBe('/v1/build/[build_id]/subjob/[subjob_id]/atom/[atom_id]/attempts');

    const attempts = (await api(master, 'GET', `/v2/builds/${buildId}/subjobs/0/atoms/0/attempts`)).body.attempts as any[];
    expect(attempts.map((a) => [a.attempt, a.state, a.exit_code, a.stop_reason])).toEqual([[1, 'COMPLETED', 5, null], [2, 'COMPLETED', 0, null]]);
    for (const attempt of attempts) {
      expect(attempt.worker).toBe(atom.atom.worker);
      expect(attempt.finished).toBeGreaterThanOrEqual(attempt.started);
    }
    expect(attempts[1].started).toBeGreaterThanOrEqual(attempts[0].finished);

    const consoleOf = async (query: string) => (await api(master, 'GET', `/v2/builds/${buildId}/subjobs/0/atoms/0/console${query}`)).body;
    expect((await consoleOf('?attempt=1')).content).toBe('first try\n');
    expect(await consoleOf('?attempt=2')).toMatchObject({ content: 'second try\n', attempt: 2 });
    expect((await consoleOf('')).content).toBe('second try\n');
    expect((await consoleOf('?attempt=3')).error).toContain('has 2 attempts, not 3');
    expect((await api(master, 'GET', `/v1/build/${buildId}/subjob/0/atom/0/console?attempt=0`)).status).toBe(400);
    expect((await api(master, 'GET', `/v1/build/${buildId}/subjob/0/atom/0/console?attempt=x`)).status).toBe(400);

    // The event log has both runs: the failed first attempt and the final result of the second.
    expect((await eventsOf(master, buildId, 'ATOM_START')).map((e) => e.attempt)).toEqual([1, 2]);
    expect((await eventsOf(master, buildId, 'ATOM_ATTEMPT_FAILED')).map((e) => [e.attempt, e.exit_code])).toEqual([[1, 5]]);
    expect((await eventsOf(master, buildId, 'ATOM_FINISH')).map((e) => [e.attempt, e.exit_code])).toEqual([[2, 0]]);
  }, TEST_TIMEOUT_MS);
});

describe('retry', () => {
  it('a FAILURE git build retried passes: same id, same commit, only the failed atom runs again, a new archive', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    const fixed = join(tempDir('cr-retry-fix-'), 'fixed');
    const job = (version: string) => [
      'Fixable:',
      '  commands:',
      `    - echo "${version} $N" > $ARTIFACT_DIR/version.txt; echo "atom $N of ${version}"; if [ "$N" = 2 ] && [ ! -e ${fixed} ]; then exit 3; fi`,
      '  atomizers:',
      '    - N: seq 1 2',
      '',
    ].join('\n');
    const repo = createRepo({ 'clusterrunner.yaml': job('v1') });
    const firstCommit = repo.head();
    const buildId = await postBuild(master, { type: 'git', url: repo.dir });
    const failed = await waitForBuild(master, buildId, undefined, BUILD_WAIT_MS);
    expect(failed.status).toBe('FAILURE');
    expect(failed.failed_atoms.map((atom: any) => [atom.subjob_id, atom.id])).toEqual([[1, 0]]);
    const firstArchive = await downloadArtifacts(master, buildId);
    expect(readText(firstArchive, 'failures.txt')).toBe('artifact_1_0');

    // The branch moves on meanwhile; the retry must still run the build's own commit.
    repo.commit({ 'clusterrunner.yaml': job('v2') });
    writeFileSync(fixed, '');
    const answer = await api(master, 'POST', `/v1/build/${buildId}/retry`, { json: {} });
    expect(answer.status).toBe(202);
    expect(answer.body).toEqual({ build_id: buildId, num_atoms_retried: 1, STATUS: 'SUCCESS' });
    const reopened = (await api(master, 'GET', `/v1/build/${buildId}`)).body.build;
    // Back to BUILDING with no result and no archive, unless it has already passed meanwhile.
    if (reopened.status !== 'SUCCESS') expect(reopened).toMatchObject({ status: 'BUILDING', result: null, failed_atoms: null, artifacts: null });

    const passed = await waitForBuild(master, buildId, undefined, BUILD_WAIT_MS);
    expect(passed).toMatchObject({ id: buildId, status: 'SUCCESS', result: 'SUCCESS', failed_atoms: [], commit_sha: firstCommit, error_message: null });
    expect(passed.state_timestamps.retried).toBeGreaterThanOrEqual(failed.state_timestamps.finished);
    expect(passed.state_timestamps.finished).toBeGreaterThanOrEqual(passed.state_timestamps.retried);
    const atoms = await atomsOf(master, buildId);
    expect(atoms.map((atom) => [atom.subjob_id, atom.attempts, atom.exit_code, atom.flaky])).toEqual([[0, 1, 0, false], [1, 2, 0, true]]);

    const archive = await downloadArtifacts(master, buildId);
    expect(listFiles(archive)).not.toContain('failures.txt');
    expect(readText(archive, 'artifact_1_0/clusterrunner_exit_code')).toBe('0\n');
    expect(readText(archive, 'artifact_1_0/version.txt')).toBe('v1 2\n');
    expect(readText(archive, 'artifact_1_0/clusterrunner_console_output')).toBe('atom 2 of v1\n');
    expect(readText(archive, 'artifact_0_0/version.txt')).toBe('v1 1\n');
    const earlier = await api(master, 'GET', `/v1/build/${buildId}/subjob/1/atom/0/console?attempt=1`);
    expect(earlier.body.content).toBe('atom 2 of v1\n');

    const retried = await eventsOf(master, buildId, 'BUILD_RETRIED');
    expect(retried).toHaveLength(1);
    expect(retried[0]).toMatchObject({ previous_status: 'FAILURE', num_atoms_retried: 1, atoms: ['1/0'] });
    expect((await eventsOf(master, buildId, 'BUILD_FINISHED')).map((e) => e.status)).toEqual(['FAILURE', 'SUCCESS']);
    // The workers tore the build down when it ended: setup ran again for the retry.
    expect((await eventsOf(master, buildId, 'BUILD_SETUP_START')).length).toBeGreaterThanOrEqual(2);
  }, TEST_TIMEOUT_MS);

  it('refuses what cannot be retried: a running build, nothing failed, unknown atoms and builds, bad bodies, no signature', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    const flag = join(tempDir('cr-retry-flag-'), 'go');
    const dir = project([
      'Slow:',
      '  commands:',
      `    - while [ ! -e ${flag} ]; do sleep 0.05; done`,
      '  atomizers:',
      '    - N: echo 1',
      '',
    ].join('\n'));
    const buildId = await postBuild(master, { type: 'directory', project_directory: dir });
    await waitForBuild(master, buildId, (build) => build.status === 'BUILDING', BUILD_WAIT_MS);
    const running = await api(master, 'POST', `/v1/build/${buildId}/retry`, { json: {} });
    expect(running.status).toBe(409);
    expect(running.body.error).toContain('only a finished build can be retried');

    writeFileSync(flag, '');
    expect((await waitForBuild(master, buildId, undefined, BUILD_WAIT_MS)).status).toBe('SUCCESS');
    const nothingFailed = await api(master, 'POST', `/v2/builds/${buildId}/retry`, { json: {} });
    expect(nothingFailed.status).toBe(409);
    expect(nothingFailed.body.error).toContain('no failed atom');

    const cases: [unknown, number, string][] = [
      [{ atoms: ['0/1'] }, 400, 'has no atom 0/1'],
      [{ atoms: ['zero'] }, 400, '"atoms.0"'],
      [{ atoms: [] }, 400, 'list at least one atom'],
      [{ atom: ['0/0'] }, 400, 'Unknown parameter "atom"'],
    ];
    for (const [body, status, text] of cases) {
      const answer = await api(master, 'POST', `/v1/build/${buildId}/retry`, { json: body });
      expect(answer.status, JSON.stringify(body)).toBe(status);
      expect(answer.body.error, JSON.stringify(body)).toContain(text);
    }
    expect((await api(master, 'POST', `/v1/build/${buildId}/retry`, { json: {}, sign: false })).status).toBe(401);
    expect((await api(master, 'POST', '/v1/build/999/retry', { json: {} })).status).toBe(404);
    expect((await api(master, 'GET', `/v1/build/${buildId}/retry`)).status).toBe(405);

    // A SUCCESS build with atoms named runs them again.
    const listed = await api(master, 'POST', `/v1/build/${buildId}/retry`, { json: { atoms: ['00/0'] } });
    expect(listed.body).toEqual({ build_id: buildId, num_atoms_retried: 1, STATUS: 'SUCCESS' });
    const again = await waitForBuild(master, buildId, undefined, BUILD_WAIT_MS);
    expect(again.status).toBe('SUCCESS');
    expect((await atomsOf(master, buildId))[0]).toMatchObject({ attempts: 2, flaky: false });
    const child = (await api(master, 'GET', `/v1/build/${buildId}`)).body.child_routes;
    expect(child.retry).toBe('/v1/build/[build_id]/retry');
  }, TEST_TIMEOUT_MS);

  it('refuses a directory build whose folder is gone (409), and retries a CANCELED one with every unfinished atom', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    const fixed = join(tempDir('cr-retry-gone-'), 'fixed');
    const gone = project(fixableJob(fixed));
    const goneId = await postBuild(master, { type: 'directory', project_directory: gone });
    expect((await waitForBuild(master, goneId, undefined, BUILD_WAIT_MS)).status).toBe('FAILURE');
    rmSync(gone, { recursive: true, force: true });
    const refused = await api(master, 'POST', `/v1/build/${goneId}/retry`, { json: {} });
    expect(refused.status).toBe(409);
    expect(refused.body.error).toContain(`The project directory ${gone} of build ${goneId} is gone`);
    expect((await api(master, 'GET', `/v1/build/${goneId}`)).body.build.status).toBe('FAILURE');

    // Canceled while its first atom runs: the retry runs every atom without a result.
    const flag = join(tempDir('cr-retry-cancel-'), 'go');
    const slow = project([
      'Slow:',
      '  commands:',
      `    - while [ ! -e ${flag} ]; do sleep 0.05; done; echo "done $N"`,
      '  atomizers:',
      '    - N: seq 1 3',
      '',
    ].join('\n'));
    const slowId = await postBuild(master, { type: 'directory', project_directory: slow });
    await eventually('the first atom to run', async () => (await atomsOf(master, slowId)).some((atom) => atom.state === 'IN_PROGRESS'));
    expect((await api(master, 'PUT', `/v1/build/${slowId}`, { json: { status: 'canceled' } })).status).toBe(200);
    expect((await waitForBuild(master, slowId, undefined, BUILD_WAIT_MS)).status).toBe('CANCELED');
    const canceledAttempts = (await api(master, 'GET', `/v2/builds/${slowId}/subjobs/0/atoms/0/attempts`)).body.attempts;
    expect(canceledAttempts.map((a: any) => [a.attempt, a.state, a.stop_reason])).toEqual([[1, 'COMPLETED', 'canceled']]);
    writeFileSync(flag, '');
    const answer = await api(master, 'POST', `/v1/build/${slowId}/retry`, { json: {} });
    expect(answer.body.num_atoms_retried).toBe(3);
    const done = await waitForBuild(master, slowId, undefined, BUILD_WAIT_MS);
    expect(done.status).toBe('SUCCESS');
    expect((await atomsOf(master, slowId)).every((atom) => atom.exit_code === 0)).toBe(true);
    expect((await api(master, 'GET', `/v1/build/${slowId}/subjob/0/atom/0/console`)).body.content).toBe('done 1\n');
  }, TEST_TIMEOUT_MS);

  it('keeps attempts and their consoles over a master restart, and retries after it', async () => {
    const base = tempDir('cr-retry-master-');
    const secret = 'a-secret-for-the-restart-test';
    const first = await startTestMaster({ base, secret });
    const worker = await startTestWorker(first, { executors: 1, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    const fixed = join(tempDir('cr-retry-restart-'), 'fixed');
    const dir = project(fixableJob(fixed, '  retries: 1\n'));
    const buildId = await postBuild(first, { type: 'directory', project_directory: dir });
    expect((await waitForBuild(first, buildId, undefined, BUILD_WAIT_MS)).status).toBe('FAILURE');
    await worker.stop();
    await first.close();

    const second = await startTestMaster({ base, secret });
    const attempts = (await api(second, 'GET', `/v2/builds/${buildId}/subjobs/1/atoms/0/attempts`)).body.attempts as any[];
    expect(attempts.map((a) => [a.attempt, a.state, a.exit_code])).toEqual([[1, 'COMPLETED', 3], [2, 'COMPLETED', 3]]);
    for (const n of [1, 2]) {
      const page = await api(second, 'GET', `/v1/build/${buildId}/subjob/1/atom/0/console?attempt=${n}`);
      expect(page.body.content).toBe(`run ${n} of atom 2\n`);
    }
    expect((await atomsOf(second, buildId))[1]).toMatchObject({ attempts: 2, flaky: false, exit_code: 3 });

    await startTestWorker(second, { executors: 1, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    writeFileSync(fixed, '');
    expect((await api(second, 'POST', `/v1/build/${buildId}/retry`, { json: {} })).body.num_atoms_retried).toBe(1);
    expect((await waitForBuild(second, buildId, undefined, BUILD_WAIT_MS)).status).toBe('SUCCESS');
    const after = (await api(second, 'GET', `/v2/builds/${buildId}/subjobs/1/atoms/0/attempts`)).body.attempts as any[];
    expect(after.map((a) => [a.attempt, a.exit_code])).toEqual([[1, 3], [2, 3], [3, 0]]);
    expect((await atomsOf(second, buildId))[1]).toMatchObject({ attempts: 3, flaky: true });
    expect(existsSync(join(base, 'results', String(buildId), 'attempts'))).toBe(true);
  }, TEST_TIMEOUT_MS);
});
