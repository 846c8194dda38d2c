/**
 * Test results (SPEC §15) through real builds on real workers: JUnit XML from ARTIFACT_DIR and from the
 * job's junit globs, the test list and its summary, hostile and huge reports reported per file while the
 * master keeps serving, and the estimates (eta_seconds, plan endpoints).
 */
import { cpSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

const FIXTURES = fileURLToPath(new URL('../fixtures/junit/', import.meta.url));

function projectWithFixtures(): string {
  const project = tempDir('cr-junit-project-');
  cpSync(FIXTURES, join(project, 'fixtures'), { recursive: true });
  return project;
}

/** subjob/atom ids of each atom by its value, from the v1 subjob list. */
async function atomsByValue(master: { url: string; secret: string }, id: number): Promise<Map<string, { subjob_id: number; atom_id: number }>> {
  const { body } = await api(master, 'GET', `/v1/build/${id}/subjob`);
  const map = new Map<string, { subjob_id: number; atom_id: number }>();
  for (const subjob of body.subjobs) {
    for (const atom of subjob.atoms) map.set(/"(.*)"/.exec(atom.command_string)![1]!, { subjob_id: subjob.id, atom_id: atom.id });
  }
  return map;
}

describe('test results from JUnit XML', () => {
  it('lists every test of every format with its atom, the failing ones with their messages, and counts them', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const project = projectWithFixtures();
    // A report left in the project by an earlier run matches a glob but was not written by any atom.
    mkdirSync(join(project, 'reports'));
    cpSync(join(FIXTURES, 'pytest.xml'), join(project, 'reports', 'stale.xml'));
    const hourAgo = new Date(Date.now() - 3600_000);
    utimesSync(join(project, 'reports', 'stale.xml'), hourAgo, hourAgo);
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        // Two reports reach the master through the junit globs ($F expanded per atom), the rest through ARTIFACT_DIR.
        commands: ['case "$F" in vitest.xml|surefire.xml) cp "fixtures/$F" "reports/$F" ;; *) cp "fixtures/$F" "$ARTIFACT_DIR/$F" ;; esac'],
        atomizers: [{ F: 'printf "pytest.xml\\nvitest.xml\\ngo-junit-report.xml\\nsurefire.xml\\nnested-testsuites.xml\\n"' }],
        junit: ['reports/$F', 'reports/stale*.xml'],
      },
    });
    const build = await waitForBuild(master, id);
    // Failing tests do not fail a build whose atoms exited 0: the exit codes decide (SPEC §5).
    expect(build.status).toBe('SUCCESS');
    expect(build.tests).toEqual({ passed: 6, failed: 4, errored: 3, skipped: 4 });

    const atoms = await atomsByValue(master, id);
    const failed = (await api(master, 'GET', `/v2/builds/${id}/tests?status=failed`)).body;
    expect(failed.total).toBe(4);
    expect(failed.summary).toEqual(build.tests);
    expect(failed.report_errors).toEqual([]);
    const byName = new Map<string, any>(failed.tests.map((test: any) => [test.name, test]));
    expect([...byName.keys()].sort()).toEqual(['TestDivide', 'arithmetic > subtracts wrongly', 'refusesOverdraft', 'test_fails']);
    expect(byName.get('test_fails')).toMatchObject({
      classname: 'test_sample', status: 'failed', attempt: 1, time: 0.005, ...atoms.get('pytest.xml'),
      message: expect.stringMatching(/^AssertionError: lists differ/),
    });
    expect(byName.get('arithmetic > subtracts wrongly')).toMatchObject({ ...atoms.get('vitest.xml'), message: expect.stringContaining('expected 2 to be 1') });
    expect(byName.get('TestDivide')).toMatchObject({ ...atoms.get('go-junit-report.xml'), message: 'Failed\ncalc_test.go:21: Divide(1, 0) = 0, want an error' });
    expect(byName.get('refusesOverdraft')).toMatchObject(atoms.get('surefire.xml')!);

    // Every test, paged; counts by status agree with the summary.
    const all: any[] = [];
    let next: string | null = `/v2/builds/${id}/tests?limit=5`;
    while (next !== null) {
      const page: any = (await api(master, 'GET', next)).body;
      expect(page.total).toBe(17);
      all.push(...page.tests);
      next = page.next;
    }
    expect(all).toHaveLength(17);
    for (const status of ['passed', 'failed', 'errored', 'skipped'] as const) {
      expect(all.filter((test) => test.status === status)).toHaveLength(build.tests[status]);
    }
    expect(all.some((test) => test.classname === 'test_sample' && test.atom_id === atoms.get('vitest.xml')!.atom_id &&
      test.subjob_id === atoms.get('vitest.xml')!.subjob_id)).toBe(false);

    const search = (await api(master, 'GET', `/v2/builds/${id}/tests?q=${encodeURIComponent('CONNECTION refused')}`)).body;
    expect(search.tests.map((test: any) => test.name)).toEqual(['talksToTheBank']);
    expect((await api(master, 'GET', `/v2/builds/${id}/tests?status=broken`)).status).toBe(400);
    expect((await api(master, 'GET', `/v2/builds/${id}/tests?colour=red`)).status).toBe(400);
    expect((await api(master, 'GET', '/v2/builds/999/tests')).status).toBe(404);
    // The list of builds shows the summary too.
    const listed = (await api(master, 'GET', '/v2/builds')).body.builds.find((b: any) => b.id === id);
    expect(listed.tests).toEqual(build.tests);
  });

  it('reports a 50 MB file and a billion-laughs file per file, reads a big honest one, and keeps serving', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1 });
    const project = projectWithFixtures();
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        commands: [
          'cp fixtures/billion-laughs.xml fixtures/malformed.xml "$ARTIFACT_DIR/"',
          // 50 MB: over the master's limit for one report (32 MiB), refused before it is read.
          '{ echo "<testsuite>"; yes \'<testcase name="t" classname="huge" time="0.001"/>\' | head -c 52428800; echo "</testsuite>"; } > "$ARTIFACT_DIR/huge.xml"',
          // 60,000 cases (about 3 MB): read in pieces while the master serves requests.
          '{ echo "<testsuites><testsuite name=\\"big\\">"; for i in $(seq 1 60000); do echo "<testcase name=\\"case $i\\" classname=\\"Big\\" time=\\"0.001\\"/>"; done; echo "</testsuite></testsuites>"; } > "$ARTIFACT_DIR/big.xml"',
        ],
        atomizers: [{ N: 'echo 1' }],
      },
    });
    // Requests keep being answered while the reports are read; each must succeed.
    let answered = 0;
    let build: any = null;
    for (;;) {
      const response = await api(master, 'GET', `/v1/build/${id}`);
      expect(response.status).toBe(200);
      expect((await api(master, 'GET', '/v1')).status).toBe(200);
      answered++;
      build = response.body.build;
      if (['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'].includes(build.status)) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(answered).toBeGreaterThan(0);
    expect(build.status).toBe('SUCCESS');
    expect(build.tests).toEqual({ passed: 60_000, failed: 0, errored: 0, skipped: 0 });
    const { body } = await api(master, 'GET', `/v2/builds/${id}/tests?limit=1`);
    expect(body.total).toBe(60_000);
    const errors = new Map<string, string>(body.report_errors.map((report: any) => [report.path, report.error]));
    expect([...errors.keys()].sort()).toEqual(['billion-laughs.xml', 'huge.xml', 'malformed.xml']);
    expect(errors.get('huge.xml')).toMatch(/over the limit of 33554432 bytes/);
    expect(errors.get('billion-laughs.xml')).toMatch(/DOCTYPE is not accepted/);
    expect(errors.get('malformed.xml')).toMatch(/line \d+/);
    expect(body.report_errors[0]).toMatchObject({ subjob_id: 0, atom_id: 0, attempt: 1, num_tests: 0 });
  });
});

describe('estimates', () => {
  it('shows eta_seconds while a build with history runs, and plans a build and a job\'s next build', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const project = tempDir('cr-plan-project-');
    writeFileSync(join(project, 'clusterrunner.yaml'), [
      'Plan:', '  commands:', '    - sleep "$T"', '  atomizers:', '    - T: printf "0.4\\n0.4\\n0.4\\n0.4\\n0.2\\n0.2\\n"', '',
    ].join('\n'));
    const request = { type: 'directory', project_directory: project, job_name: 'Plan' };
    const first = await postBuild(master, request);
    const cold = await waitForBuild(master, first);
    expect(cold.status).toBe('SUCCESS');
    expect(cold.eta_seconds).toBeNull();

    const second = await postBuild(master, request);
    const running = await waitForBuild(master, second, (build) => build.status === 'BUILDING' && build.eta_seconds !== null, 20_000);
    expect(running.eta_seconds).toBeGreaterThan(0);
    expect((await waitForBuild(master, second)).eta_seconds).toBeNull();

    const plan = (await api(master, 'GET', `/v2/builds/${second}/plan?executors=2`)).body;
    expect(plan).toMatchObject({ executors: 2, predicted_seconds: expect.any(Number) });
    // Request to end: the costs around the dispatch, learned from the build planned with history (the cold one is another regime).
    expect(plan.overheads.learned_from_builds).toBe(1);
    expect(plan.phases.prepare_seconds).toBeGreaterThan(0);
    expect(plan.overheads.setup_seconds).toBeGreaterThanOrEqual(0);
    expect(plan.overheads.per_atom_seconds).toBeGreaterThanOrEqual(0);
    expect(plan.overheads.atom_time_ratio).toBeGreaterThan(0);
    expect(plan.phases.prepare_seconds + plan.phases.dispatch_seconds + plan.phases.archive_seconds).toBeCloseTo(plan.predicted_seconds, 1);
    // The atoms' history: 4 × 0.4 + 2 × 0.2 = 2 s of work.
    const one = (await api(master, 'GET', '/v2/jobs/Plan/plan?executors=1')).body;
    const four = (await api(master, 'GET', '/v2/jobs/Plan/plan?executors=4')).body;
    expect(one.predicted_seconds).toBeGreaterThanOrEqual(2);
    expect(four.predicted_seconds).toBeLessThan(one.predicted_seconds);
    expect(four.predicted_seconds).toBeGreaterThanOrEqual(0.4);
    expect((await api(master, 'GET', '/v2/jobs/Nothing/plan?executors=1')).status).toBe(404);
    expect((await api(master, 'GET', '/v2/jobs/Plan/plan')).status).toBe(400);
    expect((await api(master, 'GET', '/v2/jobs/Plan/plan?executors=0')).status).toBe(400);
    expect((await api(master, 'GET', `/v2/builds/${second}/plan?executors=two`)).status).toBe(400);
  });
});
