/**
 * Security suite, issue 10 item 7 (worker side): build code that finds the secret (an atomizer read it
 * through its parent's command line; here an atom reads the worker's conf) or a configured credential and
 * prints it publishes nothing: the worker masks them in the console output it sends and in setup's tail.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

describe('the worker masks', () => {
  it('the secret in console output and in a failed setup\'s output', async () => {
    const master = await startTestMaster();
    const base = tempDir('cr-worker-');
    await startTestWorker(master, { base });
    const conf = join(base, 'worker.conf');
    expect(readFileSync(conf, 'utf8')).toContain(master.secret);
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { commands: [`cat '${conf}'; echo "again: $(sed -n 's/^secret = //p' '${conf}')"`], atomizers: [{ N: 'seq 1 1' }] },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const console = await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/0/console`);
    expect(console.status).toBe(200);
    const text = JSON.stringify(console.body);
    expect(text).toContain('again: ***');
    expect(text).not.toContain(master.secret);

    const failing = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { setup_build: [`cat '${conf}'; exit 3`], commands: ['true'], atomizers: [{ N: 'seq 1 1' }] },
    });
    const build = await waitForBuild(master, failing);
    expect(build.status).toBe('ERROR');
    const everything = JSON.stringify([build, (await api(master, 'GET', `/v1/build/${failing}`)).body, (await api(master, 'GET', '/v1/eventlog')).body]);
    expect(everything).not.toContain(master.secret);
  });
});
