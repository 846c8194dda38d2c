import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

const JOB = { commands: ['true'], atomizers: [{ X: 'seq 1 2' }] };

describe('a build with no worker', () => {
  it('errors with a clear message after no_worker_timeout_seconds', async () => {
    const master = await startTestMaster({ conf: { noWorkerTimeoutMs: 300 } });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.error_message).toMatch(/No worker was connected to the master for 0.3 s \(no_worker_timeout_seconds\)/);
  });

  it('runs once a worker comes, if it comes in time', async () => {
    const master = await startTestMaster({ conf: { noWorkerTimeoutMs: 5000 } });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    await waitForBuild(master, id, (b) => b.status === 'PREPARING' && b.num_atoms === 2);
    await startTestWorker(master);
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
  });
});
