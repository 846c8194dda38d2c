import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBuildArchives } from '../../master/builds/archive.ts';
import { fileTree } from '../support/build-results.ts';

let workDir: string;
let artifactsDir: string;
let tarGzPath: string;
let zipPath: string;

beforeEach(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'cr-build-archive-'));
  artifactsDir = path.join(workDir, 'artifacts');
  await mkdir(artifactsDir);
  tarGzPath = path.join(workDir, 'artifacts.tar.gz');
  zipPath = path.join(workDir, 'artifacts.zip');
});

afterEach(async () => {
  await rm(workDir, { recursive: true, force: true });
});

async function writeAtom(name: string, files: Record<string, string | Buffer>): Promise<void> {
  for (const [relative, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(artifactsDir, name, relative)), { recursive: true });
    await writeFile(path.join(artifactsDir, name, relative), content);
  }
}

function tarListing(archive: string): string[] {
  return execFileSync('tar', ['-tzf', archive], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
}

const PYTHON_ZIP = `
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive:
    assert archive.testzip() is None
    if len(sys.argv) > 2:
        archive.extractall(sys.argv[2])
    print(json.dumps(archive.namelist()))
`;

function zipListing(archive: string, extractTo?: string): string[] {
  const args = ['-c', PYTHON_ZIP, archive, ...(extractTo === undefined ? [] : [extractTo])];
  return (JSON.parse(execFileSync('python3', args, { encoding: 'utf8' })) as string[]).sort();
}

describe('writeBuildArchives', () => {
  it('writes the atom folders and failures.txt identically to tar.gz and zip', async () => {
    const binary = randomBytes(300_000);
    await writeAtom('artifact_1_0', {
      clusterrunner_command: 'make test\n',
      clusterrunner_console_output: 'ok\n',
      clusterrunner_exit_code: '0\n',
      clusterrunner_time: '1.25\n',
      'reports/junit/result.xml': '<testsuite/>',
      'reports/blob.bin': binary,
    });
    await writeAtom('artifact_3_0', { clusterrunner_exit_code: '1\n', 'nested/deeper/log.txt': 'failed' });
    await writeAtom('artifact_10_0', { clusterrunner_exit_code: '2\n' });
    await mkdir(path.join(artifactsDir, 'artifact_2_0/empty-folder'), { recursive: true });
    await chmod(path.join(artifactsDir, 'artifact_1_0/clusterrunner_command'), 0o755);
    // Not part of any atom, or not content: all left out.
    await writeFile(path.join(artifactsDir, 'stray.txt'), 'not an atom');
    await mkdir(path.join(artifactsDir, 'artifact_x'));
    await writeFile(path.join(artifactsDir, 'artifact_4_0'), 'a file, not an atom folder');
    await symlink(path.join(artifactsDir, 'artifact_1_0'), path.join(artifactsDir, 'artifact_5_0'));
    await symlink('/etc/passwd', path.join(artifactsDir, 'artifact_1_0/passwd-link'));

    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results: [], failures: ['artifact_3_0', 'artifact_10_0'] });

    const expectedFiles = [
      'artifact_1_0/',
      'artifact_1_0/clusterrunner_command',
      'artifact_1_0/clusterrunner_console_output',
      'artifact_1_0/clusterrunner_exit_code',
      'artifact_1_0/clusterrunner_time',
      'artifact_1_0/reports/',
      'artifact_1_0/reports/blob.bin',
      'artifact_1_0/reports/junit/',
      'artifact_1_0/reports/junit/result.xml',
      'artifact_10_0/',
      'artifact_10_0/clusterrunner_exit_code',
      'artifact_2_0/',
      'artifact_2_0/empty-folder/',
      'artifact_3_0/',
      'artifact_3_0/clusterrunner_exit_code',
      'artifact_3_0/nested/',
      'artifact_3_0/nested/deeper/',
      'artifact_3_0/nested/deeper/log.txt',
      'failures.txt',
    ].sort();
    const fromTar = path.join(workDir, 'from-tar');
    const fromZip = path.join(workDir, 'from-zip');
    await mkdir(fromTar);
    execFileSync('tar', ['-xzf', tarGzPath, '-C', fromTar]);
    expect(tarListing(tarGzPath)).toEqual(expectedFiles);
    expect(zipListing(zipPath, fromZip)).toEqual(expectedFiles);

    const unpacked = await fileTree(fromTar);
    expect(await fileTree(fromZip)).toEqual(unpacked);
    expect(Object.keys(unpacked).sort()).toEqual(expectedFiles);
    expect(await readFile(path.join(fromTar, 'failures.txt'), 'utf8')).toBe('artifact_10_0\nartifact_3_0');
    expect(await readFile(path.join(fromZip, 'failures.txt'), 'utf8')).toBe('artifact_10_0\nartifact_3_0');
    expect((await readFile(path.join(fromZip, 'artifact_1_0/reports/blob.bin'))).equals(binary)).toBe(true);
    expect((await stat(path.join(fromTar, 'artifact_1_0/clusterrunner_command'))).mode & 0o111).not.toBe(0);
    expect((await stat(path.join(fromTar, 'artifact_1_0/clusterrunner_time'))).mode & 0o111).toBe(0);

    // Only the two archives remain beside each other: no temp file left behind.
    expect((await readdir(workDir)).sort()).toEqual(['artifacts', 'artifacts.tar.gz', 'artifacts.zip', 'from-tar', 'from-zip']);
  });

  it('leaves failures.txt out when no atom failed', async () => {
    await writeAtom('artifact_0_0', { clusterrunner_exit_code: '0\n' });

    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results: [], failures: [] });

    const expected = ['artifact_0_0/', 'artifact_0_0/clusterrunner_exit_code'];
    expect(tarListing(tarGzPath)).toEqual(expected);
    expect(zipListing(zipPath)).toEqual(expected);
  });

  it('writes valid empty archives for an empty artifacts folder', async () => {
    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results: [], failures: [] });

    expect(tarListing(tarGzPath)).toEqual([]);
    expect(zipListing(zipPath)).toEqual([]);
  });

  it('holds only failures.txt when every atom failed before writing anything', async () => {
    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results: [], failures: ['artifact_0_0'] });

    expect(tarListing(tarGzPath)).toEqual(['failures.txt']);
    expect(zipListing(zipPath)).toEqual(['failures.txt']);
  });

  it('replaces archives written before', async () => {
    await writeAtom('artifact_0_0', { first: '1' });
    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results: [], failures: [] });
    await writeAtom('artifact_1_0', { second: '2' });

    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results: [], failures: [] });

    const expected = ['artifact_0_0/', 'artifact_0_0/first', 'artifact_1_0/', 'artifact_1_0/second'];
    expect(tarListing(tarGzPath)).toEqual(expected);
    expect(zipListing(zipPath)).toEqual(expected);
  });

  it('fails without leaving archives or temp files when the artifacts folder is missing', async () => {
    await rm(artifactsDir, { recursive: true });

    await expect(writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results: [], failures: [] })).rejects.toMatchObject({
      code: 'ARCHIVE_WRITE_FAILED',
    });
    expect(await readdir(workDir)).toEqual([]);
  });

  it('stops the zip and removes its temp file when the tar.gz cannot be written', async () => {
    await writeAtom('artifact_0_0', { big: randomBytes(2_000_000) });

    await expect(
      writeBuildArchives({ artifactsDir, tarGzPath: path.join(workDir, 'missing', 'artifacts.tar.gz'), zipPath, results: [], failures: [] }),
    ).rejects.toMatchObject({ code: 'ARCHIVE_WRITE_FAILED' });
    expect(await readdir(workDir)).toEqual(['artifacts']);
  });

  it('writes each finished atom\'s result files from its recorded result, beside what is on disk', async () => {
    // Atom 0_0 printed and wrote an artifact (and tried to fake its exit code); 1_0 left nothing on disk;
    // 2_0 started but has no result (a canceled build): only its console output goes in.
    await writeAtom('artifact_0_0', { clusterrunner_console_output: 'hello\n', clusterrunner_exit_code: '0\n', 'report.xml': '<r/>' });
    await writeAtom('artifact_2_0', { clusterrunner_console_output: 'partial\n' });
    const results = [
      { subjobId: 0, atomId: 0, command: 'export N="1"; ./test.sh', exitCode: 3, timeS: 1.234 },
      { subjobId: 1, atomId: 0, command: 'export N="2"; ./test.sh', exitCode: 0, timeS: 0 },
    ];

    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results, failures: ['artifact_0_0'] });

    const expected = [
      'artifact_0_0/', 'artifact_0_0/clusterrunner_command', 'artifact_0_0/clusterrunner_console_output',
      'artifact_0_0/clusterrunner_exit_code', 'artifact_0_0/clusterrunner_time', 'artifact_0_0/report.xml',
      'artifact_1_0/', 'artifact_1_0/clusterrunner_command', 'artifact_1_0/clusterrunner_console_output',
      'artifact_1_0/clusterrunner_exit_code', 'artifact_1_0/clusterrunner_time',
      'artifact_2_0/', 'artifact_2_0/clusterrunner_console_output', 'failures.txt',
    ];
    expect(tarListing(tarGzPath)).toEqual(expected);
    const fromZip = path.join(workDir, 'from-zip');
    expect(zipListing(zipPath, fromZip)).toEqual(expected);
    const read = (relative: string) => readFile(path.join(fromZip, relative), 'utf8');
    expect(await read('artifact_0_0/clusterrunner_exit_code')).toBe('3\n');
    expect(await read('artifact_0_0/clusterrunner_time')).toBe('1.23\n');
    expect(await read('artifact_0_0/clusterrunner_command')).toBe('export N="1"; ./test.sh\n');
    expect(await read('artifact_0_0/clusterrunner_console_output')).toBe('hello\n');
    expect(await read('artifact_1_0/clusterrunner_console_output')).toBe('');
    expect(await read('artifact_1_0/clusterrunner_exit_code')).toBe('0\n');
    expect(await read('artifact_1_0/clusterrunner_time')).toBe('0.00\n');
  });

  it('writes a zip that zip tools read when it has more than 65,535 entries (ZIP64 end records)', async () => {
    const results = Array.from({ length: 14_000 }, (_, index) => ({ subjobId: index, atomId: 0, command: `export N="${index}"; true`, exitCode: 0, timeS: 0 }));

    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results, failures: [] });

    const check = 'import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\n' +
      'print(len(z.namelist()), z.read("artifact_13999_0/clusterrunner_command").decode(), end="")';
    expect(execFileSync('python3', ['-c', check, zipPath], { encoding: 'utf8' })).toBe('70000 export N="13999"; true\n');
    expect(execFileSync('sh', ['-c', `tar -tzf ${tarGzPath} | wc -l`], { encoding: 'utf8' }).trim()).toBe('70000');
  });

  it('keeps the time of each file it reads into the listing, empty ones too', async () => {
    const results = [];
    for (let index = 0; index < 300; index++) {
      // Every tenth atom was silent: its console output is an empty file, which is not read.
      await writeAtom(`artifact_${index}_0`, { clusterrunner_console_output: index % 10 === 0 ? '' : `atom ${index}\n` });
      results.push({ subjobId: index, atomId: 0, command: `export N="${index}"; true`, exitCode: 0, timeS: 0 });
    }
    const then = new Date('2026-01-02T03:04:05Z');
    await utimes(path.join(artifactsDir, 'artifact_7_0/clusterrunner_console_output'), then, then);

    await writeBuildArchives({ artifactsDir, tarGzPath, zipPath, results, failures: [] });

    const listing = execFileSync('tar', ['--full-time', '--utc', '-tvzf', tarGzPath, 'artifact_7_0/clusterrunner_console_output'], { encoding: 'utf8' });
    expect(listing).toContain('2026-01-02 03:04:05');
    const fromZip = path.join(workDir, 'from-zip');
    expect(zipListing(zipPath, fromZip)).toHaveLength(300 * 5);
    expect(await readFile(path.join(fromZip, 'artifact_299_0/clusterrunner_console_output'), 'utf8')).toBe('atom 299\n');
    expect(await readFile(path.join(fromZip, 'artifact_290_0/clusterrunner_console_output'), 'utf8')).toBe('');
    const fromTar = path.join(workDir, 'from-tar');
    await mkdir(fromTar);
    execFileSync('tar', ['-xzf', tarGzPath, '-C', fromTar]);
    expect(await fileTree(fromTar)).toEqual(await fileTree(fromZip));
  });
});
