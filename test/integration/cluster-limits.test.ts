/**
 * The job keys that bound a build (SPEC §4): max_executors, max_executors_per_worker (alias
 * max_executors_per_slave), atom_timeout and retries, observed through real builds.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf, downloadArtifacts, listFiles, maxOverlap, processesWith, readText } from '../support/build-results.ts';

afterEach(cleanupAll);

/** Each atom records when it started and ended (ms) in spans/<value>; a job reading back those spans. */
const SPAN_COMMANDS = [
  'start=$(date +%s%3N)',
  'sleep 0.3',
  'echo "$start $(date +%s%3N)" > "$PROJECT_DIR/spans/$N"',
];

function projectWithSpans(): string {
  const project = tempDir('cr-project-');
  mkdirSync(join(project, 'spans'));
  return project;
}

function readSpans(project: string): Map<string, { start: number; end: number }> {
  const spans = new Map<string, { start: number; end: number }>();
  for (const name of readdirSync(join(project, 'spans'))) {
    const [start, end] = readFileSync(join(project, 'spans', name), 'utf8').trim().split(' ').map(Number);
    spans.set(name, { start: start!, end: end! });
  }
  return spans;
}

describe('executor limits', () => {
  it('max_executors bounds the atoms running at once over the whole cluster', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 3 });
    await startTestWorker(master, { executors: 3 });
    const project = projectWithSpans();
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: { commands: SPAN_COMMANDS, atomizers: [{ N: 'seq 1 8' }], max_executors: 2 },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const spans = readSpans(project);
    expect(spans.size).toBe(8);
    // Exactly the limit: it was reached (so the check means something) and never passed.
    expect(maxOverlap([...spans.values()])).toBe(2);
  });

  it('max_executors_per_worker bounds the atoms running at once on each worker', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 3, name: 'limited-a' });
    await startTestWorker(master, { executors: 3, name: 'limited-b' });
    const project = projectWithSpans();
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: { commands: SPAN_COMMANDS, atomizers: [{ N: 'seq 1 8' }], max_executors_per_worker: 1 },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const spans = readSpans(project);
    const atoms = await atomsOf(master, id);
    const perWorker = new Map<string, { start: number; end: number }[]>();
    for (const atom of atoms) {
      const worker = atom.worker ?? atom.subjob_worker;
      perWorker.set(worker, [...(perWorker.get(worker) ?? []), spans.get(atom.value)!]);
    }
    expect([...perWorker.keys()].sort()).toEqual(['limited-a', 'limited-b']);
    for (const [worker, workerSpans] of perWorker) expect(maxOverlap(workerSpans), worker).toBe(1);
    expect(maxOverlap([...spans.values()])).toBe(2);
  });

  it('max_executors_per_slave is the same limit under its old name', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 3 });
    const project = projectWithSpans();
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: { commands: SPAN_COMMANDS, atomizers: [{ N: 'seq 1 4' }], max_executors_per_slave: 1 },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    expect(maxOverlap([...readSpans(project).values()])).toBe(1);
  });
});

describe('atom_timeout', () => {
  it('kills an atom running past it (-15, or -9 when it ignores SIGTERM) and fails the build', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const marker = `${Date.now() % 1_000_000}`;
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        commands: [
          `if [ "$N" = polite ]; then sleep 30.${marker}1; else trap "" TERM; sleep 30.${marker}2; fi`,
        ],
        atomizers: [{ N: 'printf "polite\\nstubborn\\n"' }],
        atom_timeout: 1,
      },
    });
    const build = await waitForBuild(master, id, undefined, 20_000);
    expect(build.status).toBe('FAILURE');
    const exitCodes = Object.fromEntries((await atomsOf(master, id)).map((atom) => [atom.value, atom.exit_code]));
    expect(exitCodes).toEqual({ polite: -15, stubborn: -9 });
    const unpacked = await downloadArtifacts(master, id);
    expect([readText(unpacked, 'artifact_0_0/clusterrunner_exit_code'), readText(unpacked, 'artifact_1_0/clusterrunner_exit_code')]).toEqual(['-15\n', '-9\n']);
    await eventually('the timed-out processes to be gone', () => processesWith(`30.${marker}`).length === 0, 5_000);
  });
});

describe('retries', () => {
  it('re-runs an atom that failed once; it succeeds on its second attempt and the build is SUCCESS', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const project = tempDir('cr-project-');
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        commands: ['echo "run of $N" >> "$PROJECT_DIR/runs"', 'if [ "$N" = flaky ] && [ ! -e "$PROJECT_DIR/tried" ]; then touch "$PROJECT_DIR/tried"; exit 1; fi'],
        atomizers: [{ N: 'printf "flaky\\nsteady\\n"' }],
        retries: 1,
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    const atoms = Object.fromEntries((await atomsOf(master, id)).map((atom) => [atom.value, atom]));
    expect([atoms['flaky'].attempts, atoms['flaky'].exit_code]).toEqual([2, 0]);
    expect([atoms['steady'].attempts, atoms['steady'].exit_code]).toEqual([1, 0]);
    expect(readFileSync(join(project, 'runs'), 'utf8').split('\n').filter((line) => line === 'run of flaky')).toHaveLength(2);
    // The archive holds the attempt that counted, and no failure.
    const unpacked = await downloadArtifacts(master, id);
    expect(readText(unpacked, 'artifact_0_0/clusterrunner_exit_code')).toBe('0\n');
    expect(listFiles(unpacked)).not.toContain('failures.txt');
  });

  it('gives up after retries + 1 attempts; the build is FAILURE', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const project = tempDir('cr-project-');
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: { commands: ['echo "run" >> "$PROJECT_DIR/runs"', 'exit 3'], atomizers: [{ N: 'echo broken' }], retries: 2 },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('FAILURE');
    expect(build.failed_atoms.map((atom: any) => [atom.attempts, atom.exit_code])).toEqual([[3, 3]]);
    expect(readFileSync(join(project, 'runs'), 'utf8')).toBe('run\nrun\nrun\n');
  });
});
