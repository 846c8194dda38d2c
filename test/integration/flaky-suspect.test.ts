/**
 * Flaky atoms (SPEC §15) against a real master and worker: an atom that fails once then passes on its retry
 * is listed in its build's `flaky_atoms` and ranked by GET /v2/flaky over the job's last builds.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

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
