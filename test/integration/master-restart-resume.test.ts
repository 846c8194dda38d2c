/**
 * A master killed with SIGKILL mid-build and started again on the same base directory: the workers come
 * back and resume the leases they were running, so a running atom finishes once, with its whole console
 * output, instead of running again.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import {
  api, cleanupAll, eventually, postBuild, spawnCli, startTestWorker, tempDir, waitForBuild, writeConf, type CliProcess,
} from '../support/cluster.ts';
import { atomsOf, freePort } from '../support/build-results.ts';

afterEach(cleanupAll);

interface CliMaster {
  readonly url: string;
  readonly secret: string;
  readonly base: string;
  readonly process: CliProcess;
}

async function startCliMaster(dir: string, port: number, secret: string): Promise<CliMaster> {
  const base = join(dir, 'base');
  const conf = writeConf(dir, 'master', {
    general: { secret, base_directory: base, heartbeat_interval: 0.2, heartbeat_failure_threshold: 10 },
  });
  const process = spawnCli(['master', '-p', String(port), '-c', conf], { env: { HOME: dir } });
  const url = `http://127.0.0.1:${port}`;
  await eventually('the master to answer GET /', async () => {
    if (process.child.exitCode !== null) throw new Error(`master exited early: ${process.output()}`);
    return (await fetch(`${url}/`)).ok;
  });
  return { url, secret, base, process };
}

describe('a master killed mid-build and started again', () => {
  it('lets the worker resume the atom it was running: one run, one result, the whole console output', async () => {
    const dir = tempDir('cr-restart-');
    const project = tempDir('cr-restart-project-');
    const flag = join(project, 'go');
    // Each atom counts its runs in a file, prints, waits for the test's go-ahead, and prints again.
    writeFileSync(join(project, 'clusterrunner.yaml'), [
      'Slow:',
      '  commands:',
      `    - echo "run $N" >> runs-$N; echo "before $N"; while [ ! -e ${flag} ]; do sleep 0.05; done; echo "after $N"`,
      '  atomizers:',
      '    - N: seq 1 2',
      '',
    ].join('\n'));
    const port = await freePort();
    const secret = randomBytes(16).toString('hex');
    const first = await startCliMaster(dir, port, secret);
    await startTestWorker(first, { executors: 2 });
    const buildId = await postBuild(first, { type: 'directory', project_directory: project, job_name: 'Slow' });
    await eventually('both atoms to run', async () => {
      const atoms = await atomsOf(first, buildId);
      return atoms.length === 2 && atoms.every((atom) => atom.state === 'IN_PROGRESS');
    });
    await eventually('their first output to reach the master', async () => {
      const pages = await Promise.all([0, 1].map((subjob) =>
        api(first, 'GET', `/v1/build/${buildId}/subjob/${subjob}/atom/0/console?max_lines=10`)));
      return pages.every((page) => page.status === 200 && page.body.content.startsWith('before'));
    });

    first.process.child.kill('SIGKILL');
    await first.process.exited;
    const second = await startCliMaster(dir, port, secret);
    writeFileSync(flag, '');

    const build = await waitForBuild(second, buildId, undefined, 60_000);
    expect(build.status).toBe('SUCCESS');
    const atoms = await atomsOf(second, buildId);
    expect(atoms.map((atom) => [atom.state, atom.attempts, atom.exit_code])).toEqual([['COMPLETED', 1, 0], ['COMPLETED', 1, 0]]);
    for (const [subjob, n] of [[0, 1], [1, 2]] as const) {
      const console = await api(second, 'GET', `/v1/build/${buildId}/subjob/${subjob}/atom/0/console?max_lines=10`);
      expect(console.body.content).toBe(`before ${n}\nafter ${n}\n`);
      // Ran once: the worker went on with it rather than starting it again.
      expect(readFileSync(join(project, `runs-${n}`), 'utf8')).toBe(`run ${n}\n`);
    }
    // Build ids go on after the restart.
    const next = await postBuild(second, { type: 'directory', project_directory: project, job_name: 'Slow' });
    expect(next).toBe(buildId + 1);
    await api(second, 'PUT', `/v1/build/${next}`, { json: { status: 'canceled' } });
    await waitForBuild(second, next);

    second.process.child.kill('SIGTERM');
    await second.process.exited;
    const db = new Database(join(second.base, 'clusterrunner.db'), { readonly: true, fileMustExist: true });
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      // No lease is left behind once the builds ended.
      expect(db.prepare('SELECT COUNT(*) AS n FROM leases').get()).toEqual({ n: 0 });
    } finally {
      db.close();
    }
  });

  // The archives are written while a build runs (archive.ts, RunningArchive): a master killed then leaves
  // its temp files, and the build's archives are written whole after the restart.
  it('writes whole archives after a restart that killed the one being written, and leaves no temp file', async () => {
    const dir = tempDir('cr-restart-');
    const project = tempDir('cr-restart-project-');
    const flag = join(project, 'go');
    writeFileSync(join(project, 'clusterrunner.yaml'), [
      'Partly:',
      '  commands:',
      `    - echo "out $N"; if [ "$N" != 1 ]; then while [ ! -e ${flag} ]; do sleep 0.05; done; fi`,
      '  atomizers:',
      '    - N: seq 1 3',
      '',
    ].join('\n'));
    const port = await freePort();
    const secret = randomBytes(16).toString('hex');
    const first = await startCliMaster(dir, port, secret);
    await startTestWorker(first, { executors: 3 });
    const buildId = await postBuild(first, { type: 'directory', project_directory: project, job_name: 'Partly' });
    const buildDir = join(first.base, 'results', String(buildId));
    const temps = () => (existsSync(buildDir) ? readdirSync(buildDir).filter((name) => name.endsWith('.tmp')) : []);
    await eventually('the first atom\'s result and the archives begun', async () => {
      const atoms = await atomsOf(first, buildId);
      return atoms[0]?.state === 'COMPLETED' && temps().length === 2;
    });

    first.process.child.kill('SIGKILL');
    await first.process.exited;
    const second = await startCliMaster(dir, port, secret);
    writeFileSync(flag, '');

    expect((await waitForBuild(second, buildId, undefined, 60_000)).status).toBe('SUCCESS');
    expect(temps()).toEqual([]);
    const listing = execFileSync('tar', ['-tzf', join(buildDir, 'results.tar.gz')], { encoding: 'utf8' }).split('\n').filter(Boolean);
    expect(listing.filter((name) => name.endsWith('/'))).toEqual(['artifact_0_0/', 'artifact_1_0/', 'artifact_2_0/']);
    const fromTar = execFileSync('tar', ['-xzOf', join(buildDir, 'results.tar.gz'), 'artifact_1_0/clusterrunner_console_output'], { encoding: 'utf8' });
    expect(fromTar).toBe('out 2\n');
  });

  it('gets again the output that was on its way when the master died: the console has no hole', async () => {
    const dir = tempDir('cr-restart-');
    const project = tempDir('cr-restart-project-');
    const pidFile = join(dir, 'master.pid');
    // The atom prints, and at once kills the master: that line is in flight, or unread, or unwritten.
    writeFileSync(join(project, 'clusterrunner.yaml'), [
      'Killer:',
      '  commands:',
      `    - echo "before $N"; kill -9 $(cat ${pidFile}); sleep 1; echo "after $N"`,
      '  atomizers:',
      '    - N: seq 1 1',
      '',
    ].join('\n'));
    const port = await freePort();
    const secret = randomBytes(16).toString('hex');
    const first = await startCliMaster(dir, port, secret);
    writeFileSync(pidFile, String(first.process.child.pid));
    await startTestWorker(first, { executors: 1 });
    const buildId = await postBuild(first, { type: 'directory', project_directory: project, job_name: 'Killer' });
    await first.process.exited;
    const second = await startCliMaster(dir, port, secret);

    const build = await waitForBuild(second, buildId, undefined, 60_000);
    expect(build.status).toBe('SUCCESS');
    const console = await api(second, 'GET', `/v1/build/${buildId}/subjob/0/atom/0/console?max_lines=10`);
    const [atom] = await atomsOf(second, buildId);
    expect({ content: console.body.content, attempts: atom.attempts }).toEqual({ content: 'before 1\nafter 1\n', attempts: 1 });
  });
});
