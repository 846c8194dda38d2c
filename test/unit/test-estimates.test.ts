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
import { predictBuild, simulateDispatch } from '../../master/estimates/simulation.ts';
import { combineOverheads, DEFAULT_OVERHEADS, learnBuildOverheads, trustedLessons, type BuildFacts, type Overheads } from '../../master/estimates/overheads.ts';
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
  const layout = (executors: number, maxExecutorsPerWorker: number | null = null) => ({ executors, maxExecutors: null, maxExecutorsPerWorker });
  const none = { setupS: 0, subjobS: 0, atomS: 0, lastSubjobS: 0 };
  const subjobs = [{ id: 0, seconds: 4, numAtoms: 1 }, { id: 1, seconds: 3, numAtoms: 1 }, { id: 2, seconds: 2, numAtoms: 1 }, { id: 3, seconds: 2, numAtoms: 1 }];

  it('dispatches subjobs in order to the first free executor, as the dispatcher does', () => {
    // Two executors: 4 | 3, then 2 after the 3 (at 3), then 2 after the 4 (at 4): ends at 6.
    expect(simulateDispatch(subjobs, layout(2), none)).toBeCloseTo(6, 6);
    expect(simulateDispatch(subjobs, layout(1), none)).toBeCloseTo(11, 6);
    // max_executors caps what the build gets, whatever the executors offered.
    expect(simulateDispatch(subjobs, { executors: 8, maxExecutors: 1, maxExecutorsPerWorker: null }, none)).toBeCloseTo(11, 6);
    expect(simulateDispatch([], layout(2), none)).toBe(0);
  });

  it('adds the setup before the first subjob, per subjob and per atom on its executor, and the last result\'s own cost', () => {
    // Setup 1 s; each subjob holds its executor 0.5 s + 0.1 s per atom longer; the last results come 0.2 s after their atoms.
    const costs = { setupS: 1, subjobS: 0.5, atomS: 0.1, lastSubjobS: 0.2 };
    // Executor A: 4 (+0.6) then the third subjob, 2 (+0.2): 1 + 4.6 + 2.1 + 0.2 = 7.9. Executor B: 3 (+0.6), the fourth 2: 1 + 3.6 + 2.1 + 0.2 = 6.9.
    expect(simulateDispatch(subjobs, layout(2), costs)).toBeCloseTo(1 + 4.6 + 2 + 0.1 + 0.2, 6);
    // Per atom, not per subjob: one subjob of 10 atoms of 0.1 s on one executor.
    expect(simulateDispatch([{ id: 0, seconds: 1, numAtoms: 10 }], layout(1), costs)).toBeCloseTo(1 + 1 + 10 * 0.1 + 0.2, 6);
    // Two workers of one executor each behave as two executors.
    expect(simulateDispatch(subjobs, layout(2, 1), costs)).toBeCloseTo(simulateDispatch(subjobs, layout(2), costs), 6);
  });

  it('predicts from grouping.ts with the history, and nothing without history', () => {
    const atoms = Array.from({ length: 40 }, (_, index) => ({ variable: 'T', value: String(index) }));
    const history = new Map(atoms.map((atom) => [`export T="${atom.value}";`, 1]));
    const four = predictBuild(atoms, history, layout(4))!;
    // 40 s of work on 4 executors: a little over 10 s, and more executors predict less.
    expect(four.seconds).toBeGreaterThanOrEqual(10);
    expect(four.seconds).toBeLessThan(11);
    expect(predictBuild(atoms, history, layout(8))!.seconds).toBeLessThan(four.seconds);
    expect(predictBuild(atoms, new Map(), layout(4))).toBeNull();
  });

  it('puts preparing before the dispatch and the archive after it', () => {
    const atoms = Array.from({ length: 8 }, (_, index) => ({ variable: 'T', value: String(index) }));
    const history = new Map(atoms.map((atom) => [`export T="${atom.value}";`, 2]));
    const overheads: Overheads = { prepareS: 3, setupS: 1.5, subjobS: 0.25, atomS: 0.05, lastSubjobS: 0.1, archiveS: 2, atomTimeRatio: 1 };
    const plain = predictBuild(atoms, history, layout(2), { ...overheads, prepareS: 0, setupS: 0, subjobS: 0, atomS: 0, lastSubjobS: 0, archiveS: 0 })!;
    // 16 s of work on 2 executors.
    expect(plain.seconds).toBeCloseTo(8, 6);
    const full = predictBuild(atoms, history, layout(2), overheads)!;
    expect(full.prepareS).toBe(3);
    expect(full.archiveS).toBe(2);
    expect(full.seconds).toBeCloseTo(full.prepareS + full.dispatchS + full.archiveS, 6);
    // Setup once, then per executor 8 s of atoms with their per-atom cost and each subjob's round trip.
    const perExecutor = 4;
    expect(full.dispatchS).toBeGreaterThanOrEqual(1.5 + 8 + perExecutor * 0.05 + 0.1);
    expect(full.dispatchS).toBeLessThan(plain.seconds + 1.5 + 2 * perExecutor * (0.25 + 0.05) + 0.1);
    // Atoms that lately ran at 1.5 times their history: grouped on the history all the same, run 1.5 times as long.
    const slower = predictBuild(atoms, history, layout(2), { ...overheads, prepareS: 0, setupS: 0, subjobS: 0, atomS: 0, lastSubjobS: 0, archiveS: 0, atomTimeRatio: 1.5 })!;
    expect(slower.seconds).toBeCloseTo(12, 6);
  });
});

describe('overheads learned from a build', () => {
  // A literal build: queued at 100, prepared and the first setup at 102; two workers of one executor each.
  // Worker 1: set up from 102, leased subjob 0 (atoms of 1 s and 2 s) at 103, then subjob 2 (1 s) at 106.5.
  // Worker 2: set up from 102.5, leased subjob 1 (2 s) at 104. Finished at 111.
  const facts: BuildFacts = {
    queuedS: 100, buildingS: 102, finishedS: 111,
    setupStarts: [{ workerId: 1, atS: 102 }, { workerId: 2, atS: 102.5 }],
    leases: [
      { atS: 103, workerId: 1, executor: 0, subjobId: 0 },
      { atS: 104, workerId: 2, executor: 0, subjobId: 1 },
      { atS: 106.5, workerId: 1, executor: 0, subjobId: 2 },
    ],
    attempts: [
      // Each attempt's start to result is 0.2 s longer than the worker timed it.
      { subjobId: 0, startedS: 103.1, finishedS: 104.3, seconds: 1 },
      { subjobId: 0, startedS: 104.4, finishedS: 106.6, seconds: 2 },
      { subjobId: 1, startedS: 104.2, finishedS: 106.4, seconds: 2 },
      { subjobId: 2, startedS: 106.6, finishedS: 107.8, seconds: 1 },
    ],
  };

  it('reads each cost where the scheduler met it', () => {
    const learned = learnBuildOverheads(facts)!;
    expect(learned.prepareS).toBeCloseTo(2, 6);
    // Worker 1 waited 1 s from its setup start to its first lease, worker 2 1.5 s.
    expect(learned.setupS).toBeCloseTo(1.25, 6);
    expect(learned.atomS).toBeCloseTo(0.2, 6);
    // Subjob 0 held executor 1/0 from 103 to the next lease at 106.5: 3.5 s, of which 3 s of atoms and 2 × 0.2 per atom.
    expect(learned.subjobS).toBeCloseTo(0.1, 6);
    // The last subjobs: 1 from 104 to its result at 106.4 (2 s + 0.2), 2 from 106.5 to 107.8 (1 s + 0.2): 0.2 and 0.1.
    expect(learned.lastSubjobS).toBeCloseTo(0.15, 6);
    expect(learned.archiveS).toBeCloseTo(111 - 107.8, 6);
    // Atoms the history does not know say nothing of how they ran against it.
    expect(learned.atomTimeRatio).toBeUndefined();
    expect(learnBuildOverheads({ ...facts, againstHistory: { historyS: 8, actualS: 6 } })!.atomTimeRatio).toBeCloseTo(0.75, 6);
  });

  it('leaves out subjobs leased twice, and learns nothing from a build where nothing ran', () => {
    const requeued = { ...facts, leases: [...facts.leases, { atS: 108, workerId: 2, executor: 0, subjobId: 0 }] };
    const learned = learnBuildOverheads(requeued)!;
    // Subjob 0 is out; subjob 1 now has a next lease on its executor (108 - 104 - 2.2), subjob 2 is the one last.
    expect(learned.subjobS).toBeCloseTo(1.8, 6);
    expect(learned.lastSubjobS).toBeCloseTo(0.1, 6);
    expect(learnBuildOverheads({ ...facts, leases: [] })).toBeNull();
    expect(learnBuildOverheads({ ...facts, attempts: facts.attempts.map((attempt) => ({ ...attempt, seconds: null })) })).toBeNull();
  });

  it('takes the median over the newest builds, each figure from the builds that show it, else the default', () => {
    const combined = combineOverheads([
      { prepareS: 1, atomS: 0.1, archiveS: 5 },
      { prepareS: 3, atomS: 0.3, subjobS: 0.4 },
      { prepareS: 2, atomS: 0.2, subjobS: 0.6 },
      { prepareS: 100, atomS: 100 },
    ]);
    expect(combined).toMatchObject({ prepareS: 2, atomS: 0.2, subjobS: 0.5, archiveS: 5, builds: 3 });
    expect(combined.setupS).toBe(DEFAULT_OVERHEADS.setupS);
    expect(combineOverheads([])).toEqual({ ...DEFAULT_OVERHEADS, builds: 0 });
  });

  it('trusts builds planned with history over cold ones, once there are any', () => {
    const cold = { overheads: { subjobS: 0.4 }, isPlannedWithHistory: false };
    const grouped = (subjobS: number) => ({ overheads: { subjobS }, isPlannedWithHistory: true });
    expect(trustedLessons([cold])).toEqual([{ subjobS: 0.4 }]);
    expect(trustedLessons([grouped(0.1), cold])).toEqual([{ subjobS: 0.1 }]);
    expect(trustedLessons([grouped(0.1), cold, grouped(0.2), grouped(0.3), grouped(0.4)])).toEqual([{ subjobS: 0.1 }, { subjobS: 0.2 }, { subjobS: 0.3 }]);
    expect(combineOverheads(trustedLessons([grouped(0.1), cold, grouped(0.2)])).subjobS).toBeCloseTo(0.15, 6);
  });
});
