/**
 * Flaky atoms and suspect workers (SPEC §15) against real masters and workers: an atom that fails once then
 * passes on its retry is listed in its build's `flaky_atoms` and ranked by GET /v2/flaky over the job's last
 * builds; a worker whose atoms fail only there becomes suspect after three, gets no work until cleared.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createRepo } from '../support/git-repo.ts';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

const TEST_TIMEOUT_MS = 120_000;
/** Attempts are counted exactly: a worker declared lost on a loaded machine would add one. */
const HEARTBEAT_FAILURE_THRESHOLD = 50;
const BUILD_WAIT_MS = 60_000;
/** The flaky atom's string (its subjob and index depend on how the build's atoms were grouped). */
const FLAKY_ATOM = 'export N="2";';

function project(yaml: string): string {
  const dir = tempDir('cr-flaky-project-');
  writeFileSync(join(dir, 'clusterrunner.yaml'), yaml);
  return dir;
}

describe('flaky atoms', () => {
  it('an atom that fails once then passes with retries: 1 is in flaky_atoms and ranked by /v2/flaky', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    const markers = tempDir('cr-flaky-marks-');
    // Atom N=2 fails on its first run in each build (one marker per build run), atom 1 always passes.
    const dir = project([
      'Flaky:',
      '  retries: 1',
      '  commands:',
      `    - if [ "$N" = 2 ] && [ ! -e ${markers}/$(cat ${markers}/round) ]; then touch ${markers}/$(cat ${markers}/round); exit 5; fi; echo ok`,
      '  atomizers:',
      '    - N: seq 1 2',
      '',
    ].join('\n'));
    const buildIds: number[] = [];
    for (const round of ['a', 'b']) {
      writeFileSync(join(markers, 'round'), round);
      const buildId = await postBuild(master, { type: 'directory', project_directory: dir });
      expect((await waitForBuild(master, buildId, undefined, BUILD_WAIT_MS)).status).toBe('SUCCESS');
      buildIds.push(buildId);
    }

    const v2 = (await api(master, 'GET', `/v2/builds/${buildIds[1]}`)).body.build;
    expect(v2.flaky_atoms.map((a: any) => a.command_string)).toEqual([FLAKY_ATOM]);
    expect(v2.flaky_atoms[0]).toEqual(expect.objectContaining({ subjob_id: expect.any(Number), atom_id: expect.any(Number) }));
    const v1 = (await api(master, 'GET', `/v1/build/${buildIds[0]}`)).body.build;
    expect(v1.flaky_atoms.map((a: any) => a.command_string)).toEqual([FLAKY_ATOM]);

    const ranked = (await api(master, 'GET', '/v2/flaky?job_name=Flaky')).body;
    expect(ranked).toMatchObject({ job_name: 'Flaky', builds: 2, tests: [] });
    expect(ranked.atoms).toEqual([{ command_string: FLAKY_ATOM, flaky_count: 2, last_build_id: buildIds[1] }]);
    const lastOnly = (await api(master, 'GET', '/v2/flaky?job_name=flaky&builds=1')).body;
    expect(lastOnly.atoms.map((a: any) => a.flaky_count)).toEqual([1]);
    expect((await api(master, 'GET', '/v2/flaky?job_name=Other')).body).toMatchObject({ builds: 0, atoms: [], tests: [] });

    for (const [query, field] of [['', 'job_name'], ['?job_name=Flaky&builds=0', 'builds'], ['?job_name=Flaky&builds=501', 'builds'],
      ['?job_name=Flaky&builds=x', 'builds'], ['?job_name=Flaky&limit=3', 'limit']] as const) {
      const answer = await api(master, 'GET', `/v2/flaky${query}`);
      expect(answer.status, query).toBe(400);
      expect(JSON.stringify(answer.body), query).toContain(field);
    }
  }, TEST_TIMEOUT_MS);
});

describe('suspect workers', () => {
  it('a worker whose failed atoms pass elsewhere three times is suspect, gets no work, and is cleared by PUT', async () => {
    let master = await startTestMaster();
    const badBase = tempDir('cr-bad-worker-');
    const badName = 'bad-host';
    const badWorker = await startTestWorker(master, { executors: 1, base: badBase, name: badName, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    // A retry avoids the worker it failed on only while another is free: enough retries always reach the good one.
    await startTestWorker(master, { executors: 3, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    const fixed = join(tempDir('cr-bad-fixed-'), 'fixed');
    // Atoms fail only in the bad worker's folder (until `fixed` exists); each retry avoids the worker it failed on.
    const repo = createRepo({ 'clusterrunner.yaml': [
      'Bad:',
      '  retries: 20',
      '  commands:',
      `    - sleep 0.2; case "$PWD" in ${badBase}*) [ -e ${fixed} ] || exit 4;; esac; echo ok`,
      '  atomizers:',
      '    - N: seq 1 40',
      '',
    ].join('\n') });
    const workers = async () => (await api(master, 'GET', '/v1/worker')).body.workers as any[];
    await eventually('both workers connected', async () => (await workers()).length === 2);
    const first = await postBuild(master, { type: 'git', url: repo.dir });
    expect((await waitForBuild(master, first, undefined, BUILD_WAIT_MS)).status).toBe('SUCCESS');
    const events = async (tag: string) => ((await api(master, 'GET', '/v1/eventlog')).body.events as any[]).filter((e) => e.__tag__ === tag);
    const suspectEvents = await events('WORKER_SUSPECT');
    expect(suspectEvents).toHaveLength(1);
    let badId = suspectEvents[0].worker_id as number;
    expect(suspectEvents[0].reason).toContain('failures_passed_elsewhere: 3');
    const failedOnBad = (await events('ATOM_ATTEMPT_FAILED')).filter((e) => e.build_id === first);
    expect(failedOnBad.length).toBeGreaterThanOrEqual(3);
    expect(new Set(failedOnBad.map((e) => e.worker)).size).toBe(1);
    const badView = (await api(master, 'GET', `/v1/worker/${badId}`)).body.worker;
    expect(badView).toMatchObject({ health: 'suspect', health_reason: expect.stringContaining('failures_passed_elsewhere') });
    const metrics = await (await fetch(`${master.url}/metrics`)).text();
    expect(metrics).toMatch(/clusterrunner_workers_suspect_total 1/);

    // No new work while suspect: a second build runs entirely on the other worker.
    const second = await postBuild(master, { type: 'git', url: repo.dir });
    expect((await waitForBuild(master, second, undefined, BUILD_WAIT_MS)).status).toBe('SUCCESS');
    const starts = async (buildId: number) => (await events('ATOM_START')).filter((e) => e.build_id === buildId).map((e) => e.worker);
    expect(await starts(second)).not.toContain(badView.name);

    // The suspicion is kept by name: a restarted master still keeps a worker of that name out of rotation.
    await badWorker.stop();
    await master.close();
    master = await startTestMaster({ base: master.base, secret: master.secret });
    await startTestWorker(master, { executors: 1, base: badBase, name: badName, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    await startTestWorker(master, { executors: 3, heartbeatFailureThreshold: HEARTBEAT_FAILURE_THRESHOLD });
    await eventually('both workers back', async () => (await workers()).length === 2);
    const again = (await workers()).find((worker) => worker.name === badName);
    expect(again).toMatchObject({ health: 'suspect', health_reason: expect.stringContaining('failures_passed_elsewhere') });
    badId = again.id as number;

    // Clearing: bad bodies and unsigned requests are refused; {"health": "healthy"} clears it.
    for (const json of [{}, { health: 'suspect' }, { health: 'healthy', other: 1 }]) {
      const answer = await api(master, 'PUT', `/v1/worker/${badId}`, { json });
      expect(answer.status, JSON.stringify(json)).toBe(400);
      expect(JSON.stringify(answer.body)).toMatch(/health|other/);
    }
    expect((await api(master, 'PUT', `/v1/worker/${badId}`, { json: { health: 'healthy' }, sign: false })).status).toBeGreaterThanOrEqual(401);
    expect((await api(master, 'GET', `/v1/worker/${badId}`)).body.worker.health).toBe('suspect');
    const cleared = await api(master, 'PUT', `/v1/worker/${badId}`, { json: { health: 'healthy' } });
    expect(cleared.status).toBe(200);
    expect(cleared.body.worker).toMatchObject({ health: 'healthy', health_reason: null });

    writeFileSync(fixed, '');
    const third = await postBuild(master, { type: 'git', url: repo.dir });
    expect((await waitForBuild(master, third, undefined, BUILD_WAIT_MS)).status).toBe('SUCCESS');
    expect(await starts(third)).toContain(badView.name);
  }, TEST_TIMEOUT_MS);
});
