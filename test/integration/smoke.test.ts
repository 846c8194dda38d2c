import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

describe('a build end to end', () => {
  it('runs a directory project on an in-process cluster', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(),
      config: { commands: ['echo $X > $ARTIFACT_DIR/x'], atomizers: [{ X: 'seq 1 4' }] },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    expect(build.num_atoms).toBe(4);
  });
});
