/**
 * Security suite, issue 10 item 7 (worker side): run_as_user. A worker running as root runs build commands
 * as another user (here `nobody`): they cannot read the worker's conf and its secret, and still write their
 * ARTIFACT_DIR and their copy of the project. Runs only as root, where a `nobody` user exists.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConf } from '../../shared/conf.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { findUser } from '../../shared/process.ts';
import { WorkerDaemon } from '../../worker/daemon.ts';
import { api, cleanupAll, postBuild, startTestMaster, tempDir, waitForBuild } from '../support/cluster.ts';
import { downloadArtifacts, readText } from '../support/build-results.ts';

const nobody = findUser('nobody');
const canTest = process.getuid?.() === 0 && nobody !== null;

const daemons: WorkerDaemon[] = [];
afterEach(async () => {
  for (const daemon of daemons.splice(0)) {
    daemon.stopNow();
    await daemon.exited;
  }
  await cleanupAll();
});

function workerConf(base: string, secret: string, runAsUser: string): ReturnType<typeof loadConf> {
  const file = join(base, 'worker.conf');
  writeFileSync(file, `[general]\nsecret = ${secret}\nbase_directory = ${base}\n\n[worker]\nrun_as_user = ${runAsUser}\n`, { mode: 0o600 });
  return loadConf({ file, role: 'worker', env: {} });
}

describe.skipIf(!canTest)('run_as_user', () => {
  it('runs setup and atoms as that user: the secret is out of reach, ARTIFACT_DIR and PROJECT_DIR are theirs', async () => {
    const master = await startTestMaster();
    const base = tempDir('cr-worker-');
    const conf = workerConf(base, master.secret, 'nobody');
    expect(conf.runAsUser).toBe('nobody');
    const daemon = new WorkerDaemon({
      ...conf, masterUrl: master.url, numExecutors: 1, heartbeatIntervalMs: 200, masterUnreachableMs: 10_000, killGraceMs: 500,
      allowLocalRepositories: true, name: 'run-as-nobody', log: createSilentLogger(),
    });
    daemons.push(daemon);
    await daemon.start();
    // A directory project used in place must be readable by that user: the operator's business.
    const project = tempDir('cr-project-');
    chmodSync(project, 0o777);
    mkdirSync(join(project, 'sub'));
    chmodSync(join(project, 'sub'), 0o777);
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        setup_build: ['id -u > "$PROJECT_DIR/sub/setup-uid"'],
        commands: [
          `id -u > "$ARTIFACT_DIR/uid"; echo "$HOME" > "$ARTIFACT_DIR/home"; (cat '${join(base, 'worker.conf')}' 2>&1 || true) > "$ARTIFACT_DIR/conf"`,
        ],
        atomizers: [{ N: 'seq 1 1' }],
      },
    });
    const build = await waitForBuild(master, id);
    expect(build.status, JSON.stringify((await api(master, 'GET', `/v1/build/${id}`)).body)).toBe('SUCCESS');
    const artifacts = await downloadArtifacts(master, id);
    const atomDir = 'artifact_0_0';
    expect(readText(artifacts, `${atomDir}/uid`).trim()).toBe(String(nobody!.uid));
    expect(readText(artifacts, `${atomDir}/home`).trim()).toBe(nobody!.home);
    expect(readText(artifacts, `${atomDir}/conf`)).toMatch(/Permission denied/);
    expect(readText(artifacts, `${atomDir}/conf`)).not.toContain(master.secret);
    expect(readText(project, 'sub/setup-uid').trim()).toBe(String(nobody!.uid));
  });

  it('refuses a user that does not exist, before connecting', async () => {
    const base = tempDir('cr-worker-');
    const conf = workerConf(base, 'a-secret-for-tests', 'no-such-user-here');
    const daemon = new WorkerDaemon({ ...conf, masterUrl: 'http://127.0.0.1:9', name: 'bad', log: createSilentLogger() });
    await expect(daemon.start()).rejects.toThrow(/run_as_user "no-such-user-here" is not a user of this machine/);
  });
});
