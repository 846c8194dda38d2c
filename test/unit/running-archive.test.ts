import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RunningArchive, writeBuildArchives, type AtomResultFiles } from '../../master/builds/archive.ts';
import { fileTree } from '../support/build-results.ts';

/** The build's archives written while it runs (issue 18): the same archives as at its end, sooner. */
let workDir: string;
let artifactsDir: string;

beforeEach(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'cr-running-archive-'));
  artifactsDir = path.join(workDir, 'artifacts');
});

afterEach(async () => {
  await rm(workDir, { recursive: true, force: true });
});

const targets = (name: string) => ({ artifactsDir, tarGzPath: path.join(workDir, `${name}.tar.gz`), zipPath: path.join(workDir, `${name}.zip`) });

async function writeAtom(name: string, files: Record<string, string | Buffer>): Promise<void> {
  for (const [relative, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(artifactsDir, name, relative)), { recursive: true });
    await writeFile(path.join(artifactsDir, name, relative), content);
  }
}

const result = (subjobId: number, atomId: number, exitCode = 0): AtomResultFiles =>
  ({ subjobId, atomId, command: `export N="${subjobId}.${atomId}"; ./test.sh`, exitCode, timeS: subjobId + atomId / 10 });

/** Entry names in archive order, as tar lists them. */
function tarOrder(archive: string): string[] {
  return execFileSync('tar', ['-tzf', archive], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

/** Relative path → `dir` or size and SHA-256, of the archive unpacked (tar.gz with tar, zip with Python's zipfile). */
async function unpacked(archive: string): Promise<Record<string, string>> {
  const into = await mkdtemp(path.join(workDir, 'unpacked-'));
  if (archive.endsWith('.zip')) execFileSync('python3', ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])', archive, into]);
  else execFileSync('tar', ['-xzf', archive, '-C', into]);
  return fileTree(into);
}

const leftovers = async () => (await readdir(workDir)).filter((name) => name.endsWith('.tmp'));

describe('RunningArchive', () => {
  it('writes what writeBuildArchives writes, in the same order, whatever order the results come in', async () => {
    // Subjob 0: two atoms; 1: one silent atom (no folder); 2: three atoms, one with artifacts in a subfolder;
    // 3: one atom that never finished (the build canceled) but left its console; 4: one that never ran.
    await writeAtom('artifact_0_0', { clusterrunner_console_output: 'zero\n' });
    await writeAtom('artifact_0_1', { clusterrunner_console_output: 'one\n', 'report.xml': '<r/>' });
    await writeAtom('artifact_2_0', { clusterrunner_console_output: 'a\n' });
    await writeAtom('artifact_2_1', { clusterrunner_console_output: 'b\n', 'out/big.bin': randomBytes(200_000) });
    await writeAtom('artifact_2_2', { clusterrunner_console_output: 'c\n' });
    await writeAtom('artifact_3_0', { clusterrunner_console_output: 'partial\n' });
    const done = [result(2, 1, 3), result(0, 1), result(1, 0), result(0, 0), result(2, 2), result(2, 0)];
    const running = new RunningArchive(targets('running'), [2, 1, 3, 1, 1]);
    for (const atom of done) running.atomDone(atom);
    // Ignored: an atom outside the plan, one already in.
    running.atomDone(result(9, 0));
    running.atomDone(result(0, 0, 7));
    await running.finish(done, ['artifact_2_1']);
    await writeBuildArchives({ ...targets('at-end'), results: done, failures: ['artifact_2_1'] });

    const order = tarOrder(path.join(workDir, 'running.tar.gz'));
    expect(order).toEqual(tarOrder(path.join(workDir, 'at-end.tar.gz')));
    expect(order.filter((name) => name.endsWith('/') && !name.includes('/out'))).toEqual(
      ['artifact_0_0/', 'artifact_0_1/', 'artifact_1_0/', 'artifact_2_0/', 'artifact_2_1/', 'artifact_2_2/', 'artifact_3_0/']);
    for (const kind of ['tar.gz', 'zip']) {
      expect(await unpacked(path.join(workDir, `running.${kind}`))).toEqual(await unpacked(path.join(workDir, `at-end.${kind}`)));
    }
    expect(await leftovers()).toEqual([]);
  });

  it('writes the atoms while the build runs: the archives grow before it ends', async () => {
    const sizes = Array.from({ length: 20 }, () => 1);
    const running = new RunningArchive(targets('running'), sizes);
    const done: AtomResultFiles[] = [];
    for (let subjob = 0; subjob < 10; subjob++) {
      // Past the size read into the listing whole, so the zip streams them and grows with each.
      await writeAtom(`artifact_${subjob}_0`, { clusterrunner_console_output: randomBytes(100_000) });
      done.push(result(subjob, 0));
      running.atomDone(done.at(-1)!);
    }
    const written = async () => {
      const temps = await leftovers();
      const sizesOf = await Promise.all(temps.map(async (name) => (await stat(path.join(workDir, name))).size));
      return sizesOf.reduce((sum, size) => sum + size, 0);
    };
    await expect.poll(written, { timeout: 10_000 }).toBeGreaterThan(900_000);
    expect(await readdir(workDir)).not.toContain('running.zip');

    await running.finish(done, []);
    const names = tarOrder(path.join(workDir, 'running.tar.gz'));
    expect(names.filter((name) => name.endsWith('/'))).toEqual(done.map((atom) => `artifact_${atom.subjobId}_0/`));
    expect(await leftovers()).toEqual([]);
  });

  it('writes only in the master\'s spare time: nothing while results wait, everything at the end', async () => {
    let isBusy = true;
    const running = new RunningArchive(targets('running'), [1, 1, 1, 1], () => isBusy);
    const done: AtomResultFiles[] = [];
    for (let subjob = 0; subjob < 3; subjob++) {
      await writeAtom(`artifact_${subjob}_0`, { clusterrunner_console_output: randomBytes(400_000) });
      done.push(result(subjob, 0));
      running.atomDone(done.at(-1)!);
    }
    const written = async () => (await Promise.all((await leftovers()).map(async (name) => (await stat(path.join(workDir, name))).size))).reduce((a, b) => a + b, 0);
    await expect.poll(leftovers).toHaveLength(2);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await written()).toBe(0);
    isBusy = false;
    await expect.poll(written, { timeout: 10_000 }).toBeGreaterThan(1_000_000);
    // Busy again at the end: the rest is written all the same.
    isBusy = true;
    await writeAtom('artifact_3_0', { clusterrunner_console_output: 'last\n' });
    done.push(result(3, 0));
    await running.finish(done, []);
    expect(tarOrder(path.join(workDir, 'running.tar.gz')).filter((name) => name.endsWith('/'))).toEqual(
      ['artifact_0_0/', 'artifact_1_0/', 'artifact_2_0/', 'artifact_3_0/']);
  });

  it('puts nothing in place and leaves no temp file when abandoned', async () => {
    await writeAtom('artifact_0_0', { clusterrunner_console_output: randomBytes(100_000) });
    const running = new RunningArchive(targets('running'), [1, 1]);
    running.atomDone(result(0, 0));
    await expect.poll(leftovers).toHaveLength(2);
    await running.abandon();
    expect(await readdir(workDir)).not.toEqual(expect.arrayContaining(['running.tar.gz']));
    expect(await leftovers()).toEqual([]);
    await expect(running.finish([result(0, 0)], [])).rejects.toThrow(/abandoned/);
  });

  it('reports a failure to write at finish, leaving nothing behind', async () => {
    const running = new RunningArchive({ ...targets('running'), tarGzPath: path.join(workDir, 'missing', 'running.tar.gz') }, [1]);
    running.atomDone(result(0, 0));
    await expect(running.finish([result(0, 0)], [])).rejects.toMatchObject({ code: 'ARCHIVE_WRITE_FAILED' });
    expect(await leftovers()).toEqual([]);
    expect(await readdir(workDir)).not.toContain('running.zip');
  });
});
