/**
 * Builds that end other than by themselves (SPEC §5): canceled with stubborn processes, a worker killed
 * mid-build; and builds one after another and at once on one worker.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf, downloadArtifacts, listFiles, processesWith, readText, startCliWorker, workersOf } from '../support/build-results.ts';

afterEach(cleanupAll);

const KILL_GRACE_MS = 500;

describe('cancel', () => {
  it('stops atoms that ignore SIGTERM and their children within the kill grace, runs teardown, keeps finished atoms, and frees the worker', async () => {
    const master = await startTestMaster({ conf: { killGraceMs: KILL_GRACE_MS } });
    await startTestWorker(master, { executors: 3, name: 'cancel-worker' });
    const project = tempDir('cr-project-');
    // Unique in this machine's process list: every process of this build carries it in its command line.
    const marker = `${process.pid}${Date.now() % 100_000}`;
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        commands: [
          'if [ "$N" = quick ]; then echo done > "$ARTIFACT_DIR/quick"; exit 0; fi',
          `trap "" TERM; sleep 60.${marker}0$N & sleep 61.${marker}0$N; wait`,
        ],
        teardown_build: ['echo teardown >> "$PROJECT_DIR/teardown.log"'],
        atomizers: [{ N: 'printf "1\\n2\\nquick\\n"' }],
      },
    });
    // Both stubborn atoms and both of their sleeps run; the quick atom has finished.
    await eventually('the atoms to start', () => [1, 2].every((n) =>
      processesWith(`sleep 60.${marker}0${n}`).length > 0 && processesWith(`sleep 61.${marker}0${n}`).length > 0));
    await eventually('the quick atom to finish', async () => (await atomsOf(master, id)).some((atom) => atom.value === 'quick' && atom.exit_code === 0));

    const response = await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } });
    expect(response.status).toBe(200);
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('CANCELED');
    // The sleeps would run 60 s: gone within the conf's kill grace (plus time for the stop to be sent on a
    // loaded machine) means the SIGKILL after the grace ended them.
    await eventually('every process of the build to be gone', () => processesWith(marker).length === 0, KILL_GRACE_MS + 4_000);

    await eventually('teardown after the cancel', () => existsSync(join(project, 'teardown.log')));
    expect(readFileSync(join(project, 'teardown.log'), 'utf8')).toBe('teardown\n');

    // A canceled build still gets an archive of the atoms that finished.
    await eventually('the archive', async () => (await api(master, 'GET', `/v1/build/${id}`)).body.build.artifacts !== null, 5_000);
    expect(readText(await downloadArtifacts(master, id), 'artifact_2_0/quick')).toBe('done\n');

    await eventually('the worker to be free', async () => {
      const [worker] = await workersOf(master);
      return worker.is_alive && worker.num_executors_in_use === 0 && worker.current_build_ids.length === 0;
    }, 5_000);
    const next = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: { commands: ['true'], atomizers: [{ N: 'seq 1 2' }] } });
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
  });

  it('stops a setup_build that ignores SIGTERM; the worker runs the next build', async () => {
    const master = await startTestMaster({ conf: { killGraceMs: KILL_GRACE_MS } });
    await startTestWorker(master, { executors: 1 });
    const marker = `${process.pid}${Date.now() % 100_000}`;
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { setup_build: [`trap "" TERM; sleep 62.${marker}`], commands: ['true'], atomizers: [{ N: 'seq 1 2' }] },
    });
    await eventually('setup to run', () => processesWith(`sleep 62.${marker}`).length > 0);
    expect((await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } })).status).toBe(200);
    expect((await waitForBuild(master, id)).status).toBe('CANCELED');
    await eventually('the setup processes to be gone', () => processesWith(marker).length === 0, KILL_GRACE_MS + 4_000);
    const next = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: { commands: ['true'], atomizers: [{ N: 'seq 1 2' }] } });
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
  });
});

describe('a worker killed mid-build', () => {
  it('gives its atoms to the other worker: the build is SUCCESS with exactly one result per atom', async () => {
    const master = await startTestMaster();
    const doomed = await startCliWorker(master, { executors: 2, name: 'doomed-worker' });
    await startCliWorker(master, { executors: 2, name: 'surviving-worker' });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { commands: ['sleep 0.5', 'echo "$N" > "$ARTIFACT_DIR/value"'], atomizers: [{ N: 'seq 1 10' }] },
    });
    await eventually('the doomed worker to run an atom', async () =>
      (await atomsOf(master, id)).some((atom) => atom.state === 'IN_PROGRESS' && (atom.worker ?? atom.subjob_worker) === 'doomed-worker'));
    process.kill(-doomed.child.pid!, 'SIGKILL');

    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    expect(build.num_atoms).toBe(10);
    const atoms = await atomsOf(master, id);
    expect(atoms.every((atom) => atom.exit_code === 0 && atom.state === 'COMPLETED')).toBe(true);

    const unpacked = await downloadArtifacts(master, id);
    const valueFiles = listFiles(unpacked).filter((file) => file.endsWith('/value'));
    expect(valueFiles).toHaveLength(10);
    expect(valueFiles.map((file) => Number(readText(unpacked, file).trim())).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});

describe('one worker, several builds', () => {
  it('runs builds one after another', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    for (let round = 0; round < 3; round++) {
      const id = await postBuild(master, {
        type: 'directory', project_directory: tempDir('cr-project-'),
        config: { commands: ['echo "$N" > "$ARTIFACT_DIR/value"'], setup_build: ['true'], teardown_build: ['true'], atomizers: [{ N: 'seq 1 3' }] },
      });
      const build = await waitForBuild(master, id);
      expect(build.status, `round ${round}`).toBe('SUCCESS');
      expect(build.num_atoms).toBe(3);
    }
  });

  it('runs two builds at once on one worker with two executors', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const second = tempDir('cr-project-');
    // The first build's atom succeeds only if the second build's atom runs while it waits.
    const first = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        commands: [`for i in $(seq 1 100); do [ -e "${second}/ran" ] && exit 0; sleep 0.1; done; exit 1`],
        atomizers: [{ N: 'echo waiting' }],
      },
    });
    const other = await postBuild(master, {
      type: 'directory', project_directory: second,
      config: { commands: ['touch "$PROJECT_DIR/ran"'], atomizers: [{ N: 'echo running' }] },
    });
    const [a, b] = await Promise.all([waitForBuild(master, first), waitForBuild(master, other)]);
    expect([a.status, b.status]).toEqual(['SUCCESS', 'SUCCESS']);
  });
});
