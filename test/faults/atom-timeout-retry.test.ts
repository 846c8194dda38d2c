/**
 * An atom stopped by atom_timeout is retried when the job's `retries` allows (issue 15 item 5), and each
 * attempt keeps its stop reason: the first `timeout`, the second none. Real master, real worker.
 */
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConf } from '../../shared/conf.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { WorkerDaemon } from '../../worker/daemon.ts';
import { api, cleanupAll, postBuild, startTestMaster, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';

const daemons: WorkerDaemon[] = [];
afterEach(async () => {
  for (const daemon of daemons.splice(0)) {
    daemon.stopNow();
    await daemon.exited;
  }
  await cleanupAll();
});

/**
 * A worker in this process with a lease window of 10 s: stopping a timed-out atom scans /proc, which on a
 * loaded machine can hold this process (master and worker both) past a 0.6 s window and make the master
 * declare the worker lost, running the atom again for a reason that is not the one under test.
 */
async function startWorker(master: TestMaster): Promise<void> {
  const base = tempDir('cr-worker-');
  const file = join(base, 'worker.conf');
  writeFileSync(file, `[general]\nsecret = ${master.secret}\nbase_directory = ${base}\n`, { mode: 0o600 });
  const daemon = new WorkerDaemon({
    ...loadConf({ file, role: 'worker', env: {} }),
    masterUrl: master.url, numExecutors: 1, heartbeatIntervalMs: 1000, heartbeatFailureThreshold: 10, masterUnreachableMs: 10_000,
    killGraceMs: 500, allowLocalRepositories: true, name: `timeout-worker-${randomBytes(3).toString('hex')}`, log: createSilentLogger(),
  });
  await daemon.start();
  daemons.push(daemon);
}

function project(yaml: string[]): string {
  const dir = tempDir('cr-timeout-project-');
  writeFileSync(join(dir, 'clusterrunner.yaml'), yaml.join('\n'));
  return dir;
}

describe('an atom stopped by atom_timeout', () => {
  it('runs again with retries: 1, the first attempt recorded as stopped by the timeout', async () => {
    const master = await startTestMaster();
    await startWorker(master);
    const marker = join(tempDir('cr-timeout-'), 'timed-out-once');
    // The first run hangs past atom_timeout; the second is quick.
    const dir = project([
      'Slow:',
      '  retries: 1',
      '  atom_timeout: 1',
      '  commands:',
      `    - if [ ! -e ${marker} ]; then touch ${marker}; echo "hanging"; sleep 60; fi; echo "quick"`,
      '  atomizers:',
      '    - N: echo 1',
      '',
    ]);
    const buildId = await postBuild(master, { type: 'directory', project_directory: dir });
    const build = await waitForBuild(master, buildId, undefined, 60_000);
    expect(build.status).toBe('SUCCESS');
    const attempts = (await api(master, 'GET', `/v2/builds/${buildId}/subjobs/0/atoms/0/attempts`)).body.attempts as any[];
    expect(attempts.map((attempt) => [attempt.attempt, attempt.stop_reason, attempt.exit_code === 0])).toEqual([[1, 'timeout', false], [2, null, true]]);
    const events = ((await api(master, 'GET', '/v1/eventlog')).body.events as any[])
      .filter((event) => event.__tag__ === 'ATOM_ATTEMPT_FAILED' && event.build_id === buildId);
    expect(events.map((event) => [event.attempt, event.stop_reason])).toEqual([[1, 'timeout']]);
  });

  it('ends the build FAILURE with stop_reason timeout when no retry is left', async () => {
    const master = await startTestMaster();
    await startWorker(master);
    const dir = project([
      'Slow:',
      '  atom_timeout: 1',
      '  commands:',
      '    - sleep 60',
      '  atomizers:',
      '    - N: echo 1',
      '',
    ]);
    const buildId = await postBuild(master, { type: 'directory', project_directory: dir });
    expect((await waitForBuild(master, buildId, undefined, 60_000)).status).toBe('FAILURE');
    const atom = (await api(master, 'GET', `/v1/build/${buildId}/subjob/0/atom/0`)).body.atom;
    expect(atom).toMatchObject({ attempts: 1, stop_reason: 'timeout' });
  });
});
