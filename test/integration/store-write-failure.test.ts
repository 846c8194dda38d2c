import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

const project = (marker: string) => ({
  type: 'directory', project_directory: tempDir('cr-project-'),
  config: { commands: [`echo ${marker} $N`], atomizers: [{ N: 'printf "1\\n2\\n3\\n"' }] },
});

describe('a database write that fails', () => {
  it('fails only the build it belongs to, with the reason; the master serves every other build', async () => {
    const master = await startTestMaster();
    const doomed = await postBuild(master, project('doomed'));
    const other = await postBuild(master, project('other'));
    // Both prepared (their plans are in SQLite) and waiting for a worker.
    for (const id of [doomed, other]) await waitForBuild(master, id, (b) => b.num_atoms === 3);
    // Real SQLite refuses every later change to the doomed build's atoms, as a failing disk would.
    master.server.store.db.exec(`CREATE TRIGGER refuse_doomed BEFORE UPDATE ON atoms WHEN NEW.build_id = ${doomed}
      BEGIN SELECT RAISE(ABORT, 'injected: the disk refused the row'); END;`);
    await startTestWorker(master, { executors: 2 });

    const failed = await waitForBuild(master, doomed);
    expect(failed.status).toBe('ERROR');
    expect(failed.error_message).toContain('The master could not record the build in its database');
    expect(failed.error_message).toContain('injected: the disk refused the row');
    expect((await waitForBuild(master, other)).status).toBe('SUCCESS');

    // Still serving, and still running new builds.
    expect((await api(master, 'GET', '/v1/build')).status).toBe(200);
    const next = await postBuild(master, project('next'));
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
  });
});
