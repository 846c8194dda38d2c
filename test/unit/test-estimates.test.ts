/**
 * The pieces of SPEC §15 that need no cluster: the job key junit, the worker's collection of reports by
 * glob, estimates from test-file times, and the plan simulation on the scheduler's own code.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../master/store/database.ts';
import { testStoreOf } from '../../master/tests/test-store.ts';
import { withTestFileEstimates } from '../../master/tests/test-estimates.ts';
import { predictBuildSeconds, simulateDispatch, ATOM_OVERHEAD_S, SUBJOB_OVERHEAD_S } from '../../master/estimates/simulation.ts';
import { collectJunitFiles, JUNIT_FOLDER } from '../../worker/junit-files.ts';
import { parseJobDefinition } from '../../shared/job-config.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function temp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cr-estimates-'));
  dirs.push(dir);
  return dir;
}

describe('the job key junit', () => {
  const job = (junit: unknown) => parseJobDefinition('J', { commands: ['true'], atomizers: [{ N: 'echo 1' }], junit });
  it('keeps relative globs and is absent when not given', () => {
    expect(job(['reports/*.xml', 'out/junit-$N.xml']).junit).toEqual(['reports/*.xml', 'out/junit-$N.xml']);
    expect(parseJobDefinition('J', { commands: ['true'], atomizers: [{ N: 'echo 1' }] }).junit).toBeUndefined();
  });
  it('refuses absolute paths, "..", and what is not a list of strings, naming the key', () => {
    for (const bad of [['/etc/*.xml'], ['../up/*.xml'], 'reports/*.xml', [3]]) expect(() => job(bad)).toThrow(/"junit" must be a list of at most 32 globs/);
  });
});

describe('collectJunitFiles', () => {
  it('copies the matching files the atom wrote, with its variables expanded, and leaves old files and links', async () => {
    const project = temp();
    const artifacts = temp();
    mkdirSync(join(project, 'reports', 'deep'), { recursive: true });
    const started = Date.now();
    writeFileSync(join(project, 'reports', 'junit-1.xml'), '<testsuite/>');
    writeFileSync(join(project, 'reports', 'junit-2.xml'), '<testsuite/>');
    writeFileSync(join(project, 'reports', 'deep', 'b.xml'), '<testsuite/>');
    writeFileSync(join(project, 'reports', 'old.xml'), '<testsuite/>');
    const hourAgo = new Date(started - 3600_000);
    utimesSync(join(project, 'reports', 'old.xml'), hourAgo, hourAgo);
    symlinkSync('/etc/hostname', join(project, 'reports', 'link.xml'));
    const copied = await collectJunitFiles({
      projectDir: project, globs: ['reports/junit-$EXECUTOR_INDEX.xml', 'reports/**/*.xml'], env: { EXECUTOR_INDEX: '1' },
      artifactDir: artifacts, sinceMs: started,
    });
    expect(copied.sort()).toEqual(['reports/deep/b.xml', 'reports/junit-1.xml', 'reports/junit-2.xml']);
    expect(readdirSync(join(artifacts, JUNIT_FOLDER, 'reports')).sort()).toEqual(['deep', 'junit-1.xml', 'junit-2.xml']);
    const one = temp();
    expect(await collectJunitFiles({ projectDir: project, globs: ['reports/junit-${EXECUTOR_INDEX}.xml'], env: { EXECUTOR_INDEX: '2' },
      artifactDir: one, sinceMs: started })).toEqual(['reports/junit-2.xml']);
  });
});

describe('estimates from test-file times', () => {
  it('estimates an atom without history from its file\'s tests, by path suffix or Python module; history wins', () => {
    const db = openDatabase(':memory:');
    const tests = testStoreOf(db);
    tests.recordFileTimes('job', [
      { name: 'a', classname: 'x', file: './test/api.test.ts', status: 'passed', timeS: 1.5, message: null },
      { name: 'b', classname: 'x', file: './test/api.test.ts', status: 'failed', timeS: 2, message: 'no' },
      { name: 'c', classname: 'tests.unit.test_db', file: null, status: 'passed', timeS: 4, message: null },
    ]);
    const atoms = [
      { variable: 'F', value: '$PROJECT_DIR/test/api.test.ts' },
      { variable: 'F', value: 'tests/unit/test_db.py' },
      { variable: 'F', value: 'test/new.test.ts' },
      { variable: 'F', value: 'test/known.test.ts' },
    ];
    const merged = withTestFileEstimates(db, 'job', atoms, new Map([['export F="test/known.test.ts";', 9]]));
    expect(merged).toEqual(new Map([
      ['export F="test/known.test.ts";', 9],
      ['export F="$PROJECT_DIR/test/api.test.ts";', 3.5],
      ['export F="tests/unit/test_db.py";', 4],
    ]));
    expect(withTestFileEstimates(db, 'another job', atoms, new Map()).size).toBe(0);
    db.close();
  });
});

describe('the plan simulation', () => {
  const cost = (seconds: number, atoms = 1) => seconds + atoms * ATOM_OVERHEAD_S + SUBJOB_OVERHEAD_S;
  it('dispatches subjobs in order to the first free executor, as the dispatcher does', () => {
    const subjobs = [{ id: 0, seconds: 4, numAtoms: 1 }, { id: 1, seconds: 3, numAtoms: 1 }, { id: 2, seconds: 2, numAtoms: 1 }, { id: 3, seconds: 2, numAtoms: 1 }];
    // Two executors: 4 | 3, then 2 after the 3 (at 3), then 2 after the 4 (at 4): ends at 6.
    expect(simulateDispatch(subjobs, { executors: 2, maxExecutors: null, maxExecutorsPerWorker: null })).toBeCloseTo(cost(4) + cost(2), 6);
    expect(simulateDispatch(subjobs, { executors: 1, maxExecutors: null, maxExecutorsPerWorker: null })).toBeCloseTo(cost(4) + cost(3) + cost(2) * 2, 6);
    // max_executors caps what the build gets, whatever the executors offered.
    expect(simulateDispatch(subjobs, { executors: 8, maxExecutors: 1, maxExecutorsPerWorker: null })).toBeCloseTo(cost(4) + cost(3) + cost(2) * 2, 6);
    expect(simulateDispatch([], { executors: 2, maxExecutors: null, maxExecutorsPerWorker: null })).toBe(0);
  });

  it('predicts from grouping.ts with the history, and nothing without history', () => {
    const atoms = Array.from({ length: 40 }, (_, index) => ({ variable: 'T', value: String(index) }));
    const history = new Map(atoms.map((atom) => [`export T="${atom.value}";`, 1]));
    const layout = (executors: number) => ({ executors, maxExecutors: null, maxExecutorsPerWorker: null });
    const four = predictBuildSeconds(atoms, history, layout(4))!;
    // 40 s of work on 4 executors: a little over 10 s, and more executors predict less.
    expect(four).toBeGreaterThanOrEqual(10);
    expect(four).toBeLessThan(11);
    expect(predictBuildSeconds(atoms, history, layout(8))!).toBeLessThan(four);
    expect(predictBuildSeconds(atoms, new Map(), layout(4))).toBeNull();
  });
});
