/**
 * Fault suite: a full disk, made real with a small tmpfs (needs root or CAP_SYS_ADMIN; skipped, saying so,
 * where mounting is not allowed). Under the master's results folder: the build ends ERROR naming the atom,
 * the path and the disk, never SUCCESS with output missing. Under a worker's workspace: the atom that could
 * not write fails with the system's message. Neither process crashes, and both go on once there is room.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf } from '../support/build-results.ts';

const mounted: string[] = [];

function mountTmpfs(sizeKiB: number): string {
  const dir = tempDir('cr-tmpfs-');
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k`, 'tmpfs', dir], { stdio: 'ignore' });
  mounted.push(dir);
  return dir;
}

function canMount(): boolean {
  try {
    const dir = mountTmpfs(64);
    execFileSync('umount', [dir], { stdio: 'ignore' });
    mounted.pop();
    return true;
  } catch {
    process.stderr.write('full-disk tests skipped: this machine does not let the tests mount a tmpfs\n');
    return false;
  }
}

afterEach(async () => {
  await cleanupAll();
  for (const dir of mounted.splice(0)) {
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // already gone
    }
  }
});

function build(commands: string[], atoms = 1): Record<string, unknown> {
  return { type: 'directory', project_directory: tempDir('cr-project-'), config: { commands, atomizers: [{ N: `seq 1 ${atoms}` }] } };
}

/** 3 MiB of output: more than the 2 MiB disks below hold. */
const PRINT_3_MIB = 'head -c 3145728 /dev/zero | tr "\\0" "x"';

describe.skipIf(!canMount())('a full disk', () => {
  it('under the master\'s results: the build errors naming the atom, the path and the disk; the master goes on', async () => {
    const base = mountTmpfs(2048);
    const master = await startTestMaster({ base, conf: { database: join(tempDir('cr-db-'), 'clusterrunner.db') } });
    await startTestWorker(master, { executors: 2 });
    const id = await postBuild(master, build([PRINT_3_MIB], 2));
    const failed = await waitForBuild(master, id);
    expect(failed.status).toBe('ERROR');
    expect(failed.error_message).toMatch(new RegExp(
      `^The master could not store the output of atom artifact_\\d_0 in ${base}/results/${id}/artifacts/artifact_\\d_0: .*ENOSPC.*Is the master's disk full\\?$`));

    // Still serving, and once there is room again it runs builds as before.
    expect((await api(master, 'GET', `/v1/build/${id}`)).status).toBe(200);
    rmSync(join(base, 'results', String(id)), { recursive: true, force: true });
    const next = await postBuild(master, build(['echo fine'], 2));
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
  });

  it('under the master\'s results when the archive is written: ERROR, not SUCCESS with an archive missing', async () => {
    const base = mountTmpfs(2560);
    const master = await startTestMaster({ base, conf: { database: join(tempDir('cr-db-'), 'clusterrunner.db') } });
    await startTestWorker(master, { executors: 1 });
    // 1 MiB of random bytes fits; the archives of it (as big again, twice) do not. One atom: its files are
    // all in before the archives start (they are written while a build runs), so only the archive can fail.
    const id = await postBuild(master, build(['head -c 1048576 /dev/urandom > "$ARTIFACT_DIR/random"'], 1));
    const failed = await waitForBuild(master, id);
    expect([failed.status, failed.error_message]).toEqual(['ERROR', expect.stringMatching(
      /^The build's atoms finished but its artifact archive could not be written: .*ENOSPC/)]);
    expect((await api(master, 'GET', '/')).status).toBe(200);
  });

  it('under a worker\'s workspace: the atom that could not write fails with the system\'s message; the worker goes on', async () => {
    const master = await startTestMaster();
    const workerBase = mountTmpfs(2048);
    // A full disk while an atom writes is the fault here, not the disk-pressure health check (which would
    // keep work away from a 2 MiB workspace from the start).
    await startTestWorker(master, { base: workerBase, minDiskFreeBytes: 0 });
    const id = await postBuild(master, build([`${PRINT_3_MIB} > "$ARTIFACT_DIR/big"`]));
    const failed = await waitForBuild(master, id);
    expect(failed.status).toBe('FAILURE');
    const [atom] = await atomsOf(master, id);
    expect(atom.exit_code).not.toBe(0);
    const consoleText = readFileSync(join(master.base, 'results', String(id), 'artifacts', 'artifact_0_0', 'clusterrunner_console_output'), 'utf8');
    expect(consoleText).toContain('No space left on device');

    // The worker cleared its workspace of that atom and runs the next build.
    const next = await postBuild(master, build(['echo "$N" > "$ARTIFACT_DIR/n"'], 2));
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
  });
});
