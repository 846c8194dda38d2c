/**
 * Security suite, issue 10 item 8: processes that escape their atom. A `setsid` child used to outlive a
 * normal exit, one that also shed the marker (`env -u CLUSTERRUNNER_MARKER`) outlived a cancel, and one
 * escaped from build A wrote into build B's archive through the ARTIFACT_DIR path the executor reused. Each
 * atom now gets an ARTIFACT_DIR no earlier atom knew, and what it leaves running is stopped by its marker or,
 * marker shed, by that ARTIFACT_DIR in its environment.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf, downloadArtifacts, listFiles, processesWith } from '../support/build-results.ts';

afterEach(cleanupAll);

/** A sleep that names itself uniquely on its command line, so the test can count it. */
function uniqueSleep(): { tag: string; command: string } {
  const tag = `${200 + Math.floor(Math.random() * 100)}.${randomBytes(4).readUInt32BE(0)}`;
  return { tag: `sleep ${tag}`, command: `sleep ${tag}` };
}

describe('an escaped process', () => {
  it.each([
    ['a setsid child', (sleep: string) => `setsid ${sleep} > /dev/null 2>&1 < /dev/null &`],
    ['a setsid child that shed the marker', (sleep: string) => `env -u CLUSTERRUNNER_MARKER setsid ${sleep} > /dev/null 2>&1 < /dev/null &`],
  ])('%s does not survive its atom\'s normal exit', async (_label, launch) => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const sleep = uniqueSleep();
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { commands: [`${launch(sleep.command)} echo started`], atomizers: [{ N: 'seq 1 1' }] },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    await eventually('the escaped process to be stopped', () => processesWith(sleep.tag).length === 0 || null, 10_000);
  });

  it('that shed the marker does not survive a cancel', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const sleep = uniqueSleep();
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: {
        commands: [`env -u CLUSTERRUNNER_MARKER setsid ${sleep.command} > /dev/null 2>&1 < /dev/null & sleep 60`],
        atomizers: [{ N: 'seq 1 1' }],
      },
    });
    await eventually('the escaped process to start', () => processesWith(sleep.tag).length > 0 || null);
    expect((await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } })).status).toBe(200);
    expect((await waitForBuild(master, id)).status).toBe('CANCELED');
    await eventually('the escaped process to be stopped', () => processesWith(sleep.tag).length === 0 || null, 10_000);
  });

  it('from build A cannot write into build B\'s archive', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1 });
    const project = tempDir('cr-project-');
    const keepsWriting = `env -u CLUSTERRUNNER_MARKER setsid sh -c 'dir="$ARTIFACT_DIR"; while true; do mkdir -p "$dir" && echo planted > "$dir/planted-by-a"; sleep 0.02; done' > /dev/null 2>&1 < /dev/null &`;
    const a = await postBuild(master, { type: 'directory', project_directory: project, config: { commands: [`${keepsWriting} echo a`], atomizers: [{ N: 'seq 1 1' }] } });
    expect((await waitForBuild(master, a)).status).toBe('SUCCESS');
    const b = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: { commands: ['sleep 0.5; echo "$N" > "$ARTIFACT_DIR/b-$N"'], atomizers: [{ N: 'seq 1 3' }] },
    });
    expect((await waitForBuild(master, b)).status).toBe('SUCCESS');
    expect((await atomsOf(master, b)).every((atom) => atom.exit_code === 0)).toBe(true);
    const files = listFiles(await downloadArtifacts(master, b));
    expect(files.filter((file) => file.includes('planted'))).toEqual([]);
    expect(files.filter((file) => /b-\d$/.test(file))).toHaveLength(3);
    expect(existsSync(join(project, 'planted-by-a'))).toBe(false);
  });
});
