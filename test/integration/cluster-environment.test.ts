/**
 * What a command sees (SPEC §6.1), how atomizer output becomes atoms and values (SPEC §4), and how a job's
 * command list is joined, observed through real builds on an in-process master and workers.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf, downloadArtifacts, overlaps, processesWith, readText } from '../support/build-results.ts';

afterEach(cleanupAll);

interface Seen {
  readonly pwd: string;
  readonly projectDir: string;
  readonly artifactDir: string;
  readonly artifactEntries: string;
  readonly atomId: string;
  readonly machineExecutorIndex: string;
  readonly executorIndex: string;
  readonly buildExecutorIndex: string;
  readonly value: string;
  readonly start: number;
  readonly end: number;
}

describe('what a command sees', () => {
  it('gets PROJECT_DIR, an empty ARTIFACT_DIR, ATOM_ID, executor indexes and its value, and runs in PROJECT_DIR', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2, name: 'worker-a' });
    await startTestWorker(master, { executors: 2, name: 'worker-b' });
    const project = tempDir('cr-project-');
    mkdirSync(join(project, 'seen'));
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        commands: [
          // The first entry sets a variable the last one reads (SPEC §4: entries see each other's variables).
          'start=$(date +%s%3N)',
          'entries=$(ls -A "$ARTIFACT_DIR" | wc -l)',
          'sleep 0.4',
          'printf "%s\\n" "$(pwd -P)" "$PROJECT_DIR" "$ARTIFACT_DIR" "$entries" "$ATOM_ID" "$MACHINE_EXECUTOR_INDEX" "$EXECUTOR_INDEX" "$BUILD_EXECUTOR_INDEX" "$N" "$start" "$(date +%s%3N)" > "$PROJECT_DIR/seen/$N"',
        ],
        atomizers: [{ N: 'seq 1 8' }],
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    expect(build.num_atoms).toBe(8);

    const seen = new Map<string, Seen>();
    for (const name of readdirSync(join(project, 'seen'))) {
      const [pwd, projectDir, artifactDir, artifactEntries, atomId, machineExecutorIndex, executorIndex, buildExecutorIndex, value, start, end] =
        readFileSync(join(project, 'seen', name), 'utf8').split('\n');
      seen.set(name, {
        pwd: pwd!, projectDir: projectDir!, artifactDir: artifactDir!, artifactEntries: artifactEntries!.trim(), atomId: atomId!,
        machineExecutorIndex: machineExecutorIndex!, executorIndex: executorIndex!, buildExecutorIndex: buildExecutorIndex!,
        value: value!, start: Number(start), end: Number(end),
      });
    }
    expect([...seen.keys()].sort((a, b) => Number(a) - Number(b))).toEqual(['1', '2', '3', '4', '5', '6', '7', '8']);

    const workerOf = new Map((await atomsOf(master, id)).map((atom) => [atom.value as string, atom.worker ?? atom.subjob_worker]));
    expect(new Set(workerOf.values())).toEqual(new Set(['worker-a', 'worker-b']));

    for (const [name, atom] of seen) {
      expect(atom.value).toBe(name);
      expect(atom.pwd).toBe(realpathSync(project));
      expect(atom.projectDir).toBe(project);
      expect(atom.artifactDir).not.toBe('');
      expect(atom.artifactEntries).toBe('0');
      // One atom per subjob on a first run (SPEC §4), so each is atom 0 of its subjob.
      expect(atom.atomId).toBe('0');
      expect(['0', '1']).toContain(atom.machineExecutorIndex);
      expect(atom.executorIndex).toBe(atom.machineExecutorIndex);
      expect(atom.buildExecutorIndex).toMatch(/^\d+$/);
    }
    // Atoms running at once never share a folder (an executor's empty folder is reused by its next atom).
    const byExecutor = new Map<string, Set<string>>();
    for (const atom of seen.values()) byExecutor.set(atom.artifactDir, (byExecutor.get(atom.artifactDir) ?? new Set()).add(atom.machineExecutorIndex));
    for (const executors of byExecutor.values()) expect(executors.size).toBe(1);

    const atoms = [...seen.values()];
    let concurrentPairs = 0;
    let crossWorkerPairs = 0;
    for (const [i, a] of atoms.entries()) {
      for (const b of atoms.slice(i + 1)) {
        if (!overlaps(a, b)) continue;
        concurrentPairs++;
        expect(a.buildExecutorIndex, `atoms ${a.value} and ${b.value} ran at once`).not.toBe(b.buildExecutorIndex);
        if (workerOf.get(a.value) === workerOf.get(b.value)) {
          expect(a.machineExecutorIndex, `atoms ${a.value} and ${b.value} ran at once on one worker`).not.toBe(b.machineExecutorIndex);
        } else {
          crossWorkerPairs++;
        }
      }
    }
    // Otherwise the uniqueness checks above proved nothing.
    expect(concurrentPairs).toBeGreaterThan(0);
    expect(crossWorkerPairs).toBeGreaterThan(0);
  });

  // command_nice: a worker and a master beside it answer at once even when the commands take every CPU.
  it('runs below the worker\'s CPU priority: 10 by default, as command_nice says otherwise', async () => {
    const master = await startTestMaster();
    const own = getPriority();
    for (const [commandNice, expected] of [[undefined, 10], [3, 3], [0, 0]] as const) {
      const worker = await startTestWorker(master, commandNice === undefined ? {} : { commandNice });
      const project = tempDir('cr-project-');
      const id = await postBuild(master, {
        type: 'directory', project_directory: project,
        config: { commands: ['ps -o ni= -p $$ > "$PROJECT_DIR/nice"'], atomizers: [{ N: 'echo 1' }] },
      });
      expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
      expect(Number(readFileSync(join(project, 'nice'), 'utf8'))).toBe(Math.min(19, own + expected));
      await worker.stop();
    }
  });

  it('runs with pipefail: `false | true` fails the atom', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { commands: ['false | true'], atomizers: [{ N: 'echo one' }] },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('FAILURE');
    expect(build.failed_atoms).toHaveLength(1);
    expect(build.failed_atoms[0].exit_code).toBe(1);
  });
});

describe('ARTIFACT_DIR', () => {
  it('is empty for every atom, also after atoms on the same executor wrote artifacts or were stopped', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1 });
    const project = tempDir('cr-artifact-dir-');
    // Odd atoms write artifacts, every third one times out leaving a file behind; each checks it starts empty.
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        commands: ['test -z "$(ls -A "$ARTIFACT_DIR")" || exit 7; echo "$N" > "$ARTIFACT_DIR/n"; if [ $((N % 3)) = 0 ]; then sleep 5; fi; [ $((N % 2)) = 1 ] || rm "$ARTIFACT_DIR/n"'],
        atomizers: [{ N: 'seq 1 9' }],
        atom_timeout: 1,
      },
    });
    const build = await waitForBuild(master, id);
    const exitCodes = (await atomsOf(master, id)).map((atom) => atom.exit_code);
    // Only the timed-out atoms (3, 6, 9) fail, never one that found a folder with something in it (7).
    expect(exitCodes.filter((code) => code === 7)).toEqual([]);
    expect(exitCodes.filter((code) => code !== 0)).toHaveLength(3);
    expect(build.status).toBe('FAILURE');
    const artifacts = await downloadArtifacts(master, id);
    for (const n of [1, 5, 7]) expect(readText(artifacts, `artifact_${n - 1}_0/n`).trim()).toBe(String(n));
  });
});

describe('an atom that leaves a process behind', () => {
  it('is done when its shell exits, even though the leftover still holds its output', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const marker = `${process.pid}${Date.now() % 100_000}`;
    try {
      const startedAt = Date.now();
      const id = await postBuild(master, {
        type: 'directory', project_directory: tempDir('cr-project-'),
        config: { commands: [`sleep 63.${marker} &`, 'echo left it running'], atomizers: [{ N: 'echo one' }] },
      });
      const build = await waitForBuild(master, id, undefined, 20_000);
      expect(build.status).toBe('SUCCESS');
      expect(Date.now() - startedAt).toBeLessThan(15_000);
    } finally {
      for (const pid of processesWith(`sleep 63.${marker}`)) process.kill(pid, 'SIGKILL');
    }
  });
});

describe('joining the command list', () => {
  it('stops at the first failing entry and lets later entries see variables set by earlier ones', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const project = tempDir('cr-project-');
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        commands: [
          'export GREETING="hello $N"',
          'echo first > "$PROJECT_DIR/first_$N";',
          'test "$N" != bad',
          'echo "$GREETING" > "$PROJECT_DIR/last_$N";',
        ],
        atomizers: [{ N: 'printf "good\\nbad\\n"' }],
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('FAILURE');
    expect(build.failed_atoms.map((atom: any) => [atom.command_string, atom.exit_code])).toEqual([['export N="bad";', 1]]);
    expect(readFileSync(join(project, 'first_good'), 'utf8')).toBe('first\n');
    expect(readFileSync(join(project, 'first_bad'), 'utf8')).toBe('first\n');
    expect(readFileSync(join(project, 'last_good'), 'utf8')).toBe('hello good\n');
    expect(existsSync(join(project, 'last_bad'))).toBe(false);
  });
});

describe('atomizers', () => {
  it('hand values to the command literally: nothing in a value is executed, every byte arrives', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const project = tempDir('cr-project-');
    writeFileSync(join(project, 'x'), 'must survive\n');
    const values = [
      '$(touch pwned)',
      '`touch pwned`',
      '"quotes" and \'single quotes\'',
      '; rm -rf x; touch pwned',
      'a\\b \\n $HOME ${PATH} $((1+1)) !! & | > pwned',
      'tab\there, ünïcödé ✓',
    ];
    // A quoted here-document: the atomizer itself prints the values without interpreting them.
    writeFileSync(join(project, 'atomize.sh'), [
      'echo "this is stderr, not an atom" >&2',
      "cat <<'END_OF_VALUES'",
      ...values,
      'END_OF_VALUES',
      'echo "$PROJECT_DIR/sub dir/file"',
      'printf "\\n\\n\\n"',
      '',
    ].join('\n'));
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: { commands: ['printf "%s" "$V" > "$ARTIFACT_DIR/value"'], atomizers: [{ V: 'bash atomize.sh' }] },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    // No atom from stderr, none from the trailing blank lines.
    expect(build.num_atoms).toBe(values.length + 1);

    const artifacts = await downloadArtifacts(master, id);
    const received = Array.from({ length: values.length + 1 }, (_, index) => readText(artifacts, `artifact_${index}_0/value`));
    expect(received).toEqual([...values, `${project}/sub dir/file`]);
    expect(existsSync(join(project, 'pwned'))).toBe(false);
    expect(existsSync(join(process.cwd(), 'pwned'))).toBe(false);
    expect(readFileSync(join(project, 'x'), 'utf8')).toBe('must survive\n');

    // The master stores the project path as $PROJECT_DIR; the worker put its own path back.
    const atoms = await atomsOf(master, id);
    const pathAtom = atoms.find((atom) => atom.subjob_id === values.length);
    expect(pathAtom.command_string).toBe('export V="$PROJECT_DIR/sub dir/file";');
  });

  it('are concatenated, each atom seeing only its own variable', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        commands: ['printf "%s|%s" "${FIRST-unset}" "${SECOND-unset}" > "$ARTIFACT_DIR/seen"'],
        atomizers: [{ FIRST: 'printf "1\\n2\\n"' }, { SECOND: 'printf "x\\ny\\n\\n"' }],
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    expect(build.num_atoms).toBe(4);
    const atoms = (await atomsOf(master, id)).sort((a, b) => a.subjob_id - b.subjob_id);
    expect(atoms.map((atom) => atom.command_string)).toEqual(['export FIRST="1";', 'export FIRST="2";', 'export SECOND="x";', 'export SECOND="y";']);
    const artifacts = await downloadArtifacts(master, id);
    expect([0, 1, 2, 3].map((index) => readText(artifacts, `artifact_${index}_0/seen`))).toEqual(['1|unset', '2|unset', 'unset|x', 'unset|y']);
  });

  it('that fail put the build in ERROR with "Atomizer command failed!" and the tail of their output', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { commands: ['true'], atomizers: [{ N: 'seq 1 300; echo "the last words of the atomizer" >&2; exit 3' }] },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.error_message).toContain('Atomizer command failed!');
    expect(build.error_message).toContain('the last words of the atomizer');
    expect(build.error_message).toContain('300');
  });

  it('that print no atom make the build SUCCESS at once, with no worker needed', async () => {
    const master = await startTestMaster();
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { commands: ['true'], atomizers: [{ N: 'printf "\\n\\n"' }] },
    });
    const build = await waitForBuild(master, id, undefined, 5_000);
    expect(build.status).toBe('SUCCESS');
    expect(build.num_atoms).toBe(0);
    expect(build.num_subjobs).toBe(0);
  });
});
