/**
 * The build archive's layout (SPEC §7) and setup/teardown once per worker per build (SPEC §6), observed
 * through real builds.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { downloadArtifacts, listFiles, readText, startCliWorker, workersOf } from '../support/build-results.ts';

afterEach(cleanupAll);

const ATOM_FILES = ['clusterrunner_command', 'clusterrunner_console_output', 'clusterrunner_exit_code', 'clusterrunner_time'];

describe('the build archive', () => {
  it('holds a folder per atom with its four files and what it wrote to ARTIFACT_DIR, and failures.txt sorted without a trailing newline', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        commands: [
          'mkdir -p "$ARTIFACT_DIR/nested/deeper"',
          'printf "value %s" "$N" > "$ARTIFACT_DIR/nested/deeper/file.txt"',
          'echo "console of $N"',
          'test "$N" != 3 && test "$N" != 10',
        ],
        atomizers: [{ N: 'seq 0 10' }],
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('FAILURE');
    expect(build.failed_atoms.map((atom: any) => atom.command_string).sort()).toEqual(['export N="10";', 'export N="3";']);
    expect(build.artifacts).toBe(`/v1/build/${id}/artifacts.tar.gz`);

    const unpacked = await downloadArtifacts(master, id);
    const expected = ['failures.txt'];
    for (let subjob = 0; subjob <= 10; subjob++) {
      expected.push(...[...ATOM_FILES, 'nested/deeper/file.txt'].map((file) => `artifact_${subjob}_0/${file}`));
    }
    expect(listFiles(unpacked)).toEqual(expected.sort());
    expect(readText(unpacked, 'failures.txt')).toBe('artifact_10_0\nartifact_3_0');

    for (let subjob = 0; subjob <= 10; subjob++) {
      const folder = `artifact_${subjob}_0`;
      const isFailing = subjob === 3 || subjob === 10;
      expect(readText(unpacked, `${folder}/nested/deeper/file.txt`)).toBe(`value ${subjob}`);
      expect(readText(unpacked, `${folder}/clusterrunner_exit_code`)).toBe(isFailing ? '1\n' : '0\n');
      expect(readText(unpacked, `${folder}/clusterrunner_time`)).toMatch(/^\d+\.\d\d\n$/);
      expect(readText(unpacked, `${folder}/clusterrunner_console_output`)).toContain(`console of ${subjob}\n`);
      const command = readText(unpacked, `${folder}/clusterrunner_command`);
      expect(command.endsWith('\n')).toBe(true);
      expect(command).toContain(`"${subjob}"`);
    }

    // The zip holds the same files with the same content.
    const unzipped = await downloadArtifacts(master, id, 'zip');
    expect(listFiles(unzipped)).toEqual(listFiles(unpacked));
    for (const file of listFiles(unpacked)) expect(readText(unzipped, file), file).toBe(readText(unpacked, file));
  });
});

describe('setup_build and teardown_build', () => {
  it('leaves no atom folder on the worker, whether the atom left it empty or wrote artifacts into it', async () => {
    const master = await startTestMaster();
    const base = tempDir('cr-worker-');
    await startTestWorker(master, { executors: 2, base });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        commands: [
          // Odd atoms write an artifact (their folder goes after it was sent); even ones leave theirs empty.
          'if [ $((N % 2)) = 1 ]; then echo "artifact $N" > "$ARTIFACT_DIR/out.txt"; fi',
          'echo "atom $N"',
        ],
        atomizers: [{ N: 'seq 0 7' }],
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    const unpacked = await downloadArtifacts(master, id);
    expect(readText(unpacked, 'artifact_3_0/out.txt')).toBe('artifact 3\n');

    const workerRoot = join(base, 'worker');
    const atomFolders = () => readdirSync(workerRoot).flatMap((session) => {
      const artifacts = join(workerRoot, session, 'artifacts');
      return existsSync(artifacts) ? readdirSync(artifacts) : [];
    });
    await eventually('every atom folder removed', () => atomFolders().length === 0, 10_000);
  });

  it('run once per worker per build: setup before its first atom there, teardown after its last', async () => {
    const master = await startTestMaster();
    // Real worker processes: each command's $PPID then tells which worker ran it.
    await startCliWorker(master, { executors: 2, name: 'setup-worker-a' });
    await startCliWorker(master, { executors: 2, name: 'setup-worker-b' });
    const project = tempDir('cr-project-');
    const log = join(project, 'events.log');
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        setup_build: ['sleep 0.2', 'echo "setup $PPID" >> "$PROJECT_DIR/events.log"'],
        commands: ['sleep 0.3', 'echo "atom $PPID $N" >> "$PROJECT_DIR/events.log"'],
        teardown_build: ['echo "teardown $PPID" >> "$PROJECT_DIR/events.log"'],
        atomizers: [{ N: 'seq 1 8' }],
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    await eventually('both teardowns', () => readFileSync(log, 'utf8').split('\n').filter((line) => line.startsWith('teardown')).length >= 2);

    const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
    const byWorker = new Map<string, string[]>();
    for (const line of lines) {
      const [kind, pid, value] = line.split(' ');
      byWorker.set(pid!, [...(byWorker.get(pid!) ?? []), value === undefined ? kind! : `${kind} ${value}`]);
    }
    expect(byWorker.size).toBe(2);
    const atoms: string[] = [];
    for (const [pid, events] of byWorker) {
      expect(events[0], `worker ${pid}: ${events.join(', ')}`).toBe('setup');
      expect(events.at(-1), `worker ${pid}: ${events.join(', ')}`).toBe('teardown');
      const middle = events.slice(1, -1);
      expect(middle.length, `worker ${pid} ran atoms`).toBeGreaterThan(0);
      for (const event of middle) expect(event).toMatch(/^atom \d+$/);
      atoms.push(...middle);
    }
    expect(atoms.sort()).toEqual(['atom 1', 'atom 2', 'atom 3', 'atom 4', 'atom 5', 'atom 6', 'atom 7', 'atom 8']);
    // Nothing more happens later: no second setup or teardown.
    expect(readFileSync(log, 'utf8').trimEnd().split('\n')).toHaveLength(12);
  });

  it('failing on the only worker make the build ERROR with the setup output tail; the worker stays and runs the next build', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2, name: 'lonely-worker' });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        setup_build: ['seq 1 200', 'echo "setup is going wrong 4711"', 'exit 4'],
        commands: ['true'],
        atomizers: [{ N: 'seq 1 3' }],
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.error_message).toContain('setup is going wrong 4711');

    const workers = await workersOf(master);
    expect(workers.map((worker) => [worker.name, worker.is_alive, worker.is_in_shutdown_mode])).toEqual([['lonely-worker', true, false]]);

    const next = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { commands: ['echo fine'], atomizers: [{ N: 'seq 1 3' }] },
    });
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
  });
});
