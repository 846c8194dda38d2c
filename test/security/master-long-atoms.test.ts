/**
 * Security suite, issue 10 item 10: one atomizer line longer than max_atom_bytes (64 KiB) ends the build in
 * ERROR naming the line, where a 1 MiB line hung the build in BUILDING and a 4 MiB one broke the worker's
 * connection again and again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_ATOM_BYTES } from '../../master/builds/atomize.ts';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

describe('an atom longer than max_atom_bytes', () => {
  it('makes the build ERROR naming the atomizer line, and the worker stays connected for the next build', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const long = `echo short; head -c ${4 * 1024 * 1024} /dev/zero | tr '\\0' a; echo`;
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ X: long }] } });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.error_message).toContain(`Atomizer line 2 is ${4 * 1024 * 1024} bytes long, over the limit of ${MAX_ATOM_BYTES} bytes per atom (max_atom_bytes)`);
    expect(build.error_message.length).toBeLessThan(2000);

    const next = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ X: 'echo 1' }] } });
    expect((await waitForBuild(master, next)).status).toBe('SUCCESS');
    expect((await api(master, 'GET', '/v1/worker')).body.workers).toHaveLength(1);
  }, 120_000);

  it('refuses an atoms_override entry past the limit the same way', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ X: 'echo 1' }] },
      atoms_override: [`export X="${'b'.repeat(MAX_ATOM_BYTES + 100)}";`],
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.error_message).toContain('atoms_override[0] is');
  }, 120_000);
});
