/**
 * Security suite: commands that print or write without end. An atomizer printing a million lines or an
 * endless stream, an atom printing 1 GB, an atom leaving 10,000 files: each meets a limit from the conf,
 * with a message naming it, while the worker process's memory stays bounded and nothing is left running.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf, downloadArtifacts, listFiles, processesWith, startCliWorker } from '../support/build-results.ts';

afterEach(async () => {
  await cleanupAll();
});

const MiB = 1024 * 1024;

function directoryBuild(config: Record<string, unknown>): Record<string, unknown> {
  return { type: 'directory', project_directory: tempDir('cr-project-'), config };
}

/** Peak resident memory of a process, from /proc (Linux). */
function peakRssBytes(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmHWM for pid ${pid}`);
  return Number(match[1]) * 1024;
}

describe('an atomizer that prints without end', () => {
  it('1,000,000 lines: the build errors at max_atoms, naming it', async () => {
    const master = await startTestMaster();
    const id = await postBuild(master, directoryBuild({ commands: ['true'], atomizers: [{ N: 'seq 1 1000000' }] }));
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.error_message).toContain('The atomizers produced more than 200000 atoms (max_atoms).');
    expect((await atomsOf(master, id))).toEqual([]);
  });

  it('an endless stream: stopped at max_atomizer_output_bytes, naming it, and not left running', async () => {
    const master = await startTestMaster({ conf: { maxAtomizerOutputBytes: MiB } });
    const marker = `endless-atomizer-${Date.now()}`;
    const id = await postBuild(master, directoryBuild({ commands: ['true'], atomizers: [{ N: `MARK=${marker} yes atom` }] }));
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.error_message).toContain(`(max_atomizer_output_bytes)`);
    expect(processesWith(marker)).toEqual([]);
  });
});

describe('an atom that prints 1 GB', () => {
  it('keeps max_console_bytes of it, says it cut the rest, and the worker stays small', async () => {
    const master = await startTestMaster({ conf: { maxConsoleBytes: MiB } });
    const worker = await startCliWorker(master, { name: 'gigabyte' });
    const id = await postBuild(master, directoryBuild({
      commands: [`head -c 1000000000 /dev/zero | tr '\\0' x`],
      atomizers: [{ N: 'echo 1' }],
    }));
    const build = await waitForBuild(master, id, undefined, 120_000);
    expect(build.status).toBe('SUCCESS');

    const [atom] = await atomsOf(master, id);
    const consoleFile = join(master.base, 'results', String(id), 'artifacts', `artifact_${atom.subjob_id}_${atom.id}`, 'clusterrunner_console_output');
    const size = statSync(consoleFile).size;
    const notice = `\n[ClusterRunner: console output cut at ${MiB} bytes (max_console_bytes)]\n`;
    expect(size).toBe(MiB + notice.length);
    expect(readFileSync(consoleFile, 'utf8').trimEnd().split('\n').at(-1)).toBe(`[ClusterRunner: console output cut at ${MiB} bytes (max_console_bytes)]`);
    const workerPeak = peakRssBytes(worker.child.pid!);
    process.stderr.write(`FIGURE 1 GB atom: worker peak RSS ${Math.round(workerPeak / MiB)} MiB, console kept ${size} bytes\n`);
    expect(workerPeak).toBeLessThan(300 * MiB);
  });
});

describe('an atom that leaves 10,000 files in ARTIFACT_DIR', () => {
  const writeFiles = 'mkdir -p "$ARTIFACT_DIR/many" && cd "$ARTIFACT_DIR/many" && seq 1 10000 | xargs touch';

  it('has all of them in the archive when they fit max_artifact_files', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, directoryBuild({ commands: [writeFiles], atomizers: [{ N: 'echo 1' }] }));
    expect((await waitForBuild(master, id, undefined, 60_000)).status).toBe('SUCCESS');
    const files = listFiles(await downloadArtifacts(master, id)).filter((path) => path.startsWith('artifact_0_0/many/'));
    expect(files).toHaveLength(10_000);
  });

  it('fails the atom when they do not, naming max_artifact_files', async () => {
    const master = await startTestMaster({ conf: { maxArtifactFiles: 5_000 } });
    await startTestWorker(master);
    const id = await postBuild(master, directoryBuild({ commands: [writeFiles], atomizers: [{ N: 'echo 1' }] }));
    const build = await waitForBuild(master, id, undefined, 60_000);
    expect(build.status).toBe('FAILURE');
    const consoleFile = join(master.base, 'results', String(id), 'artifacts', 'artifact_0_0', 'clusterrunner_console_output');
    expect(readFileSync(consoleFile, 'utf8')).toMatch(/artifacts refused: the archive holds more than 5000 files and folders .*max_artifact_files = 5000/);
  });
});
