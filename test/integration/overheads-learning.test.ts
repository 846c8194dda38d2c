/**
 * A job's overheads (master/estimates/overheads.ts) learned from real builds, all at once or a piece per
 * turn of the event loop: the same figures either way, and the pieces let other work run in between (the
 * learning once held a status read 50-80 ms after a build of 10,000 atoms: issue 18). A build's end starts
 * the learning in the background, so the next ETA finds it done.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { jobOverheads, jobOverheadsInTurns } from '../../master/estimates/overheads.ts';
import { warmJobOverheads } from '../../master/estimates/estimates.ts';
import { cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

describe('learning a job\'s overheads', () => {
  it('gives the same figures a piece per turn as at once, and lets the event loop turn in between', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const project = tempDir('cr-learn-project-');
    writeFileSync(join(project, 'clusterrunner.yaml'), [
      'Learn:', '  commands:', '    - sleep "$T"', '  atomizers:', '    - T: printf "0.2\\n0.2\\n0.1\\n0.1\\n0.1\\n0.1\\n"', '',
    ].join('\n'));
    const request = { type: 'directory', project_directory: project, job_name: 'Learn' };
    for (let round = 0; round < 2; round++) expect((await waitForBuild(master, await postBuild(master, request))).status).toBe('SUCCESS');
    const { store } = master.server;
    const job = store.builds.get(1)!.job!;

    const atOnce = jobOverheads(store, job.name, job.timingKey);
    expect(atOnce.builds).toBeGreaterThan(0);
    let turns = 0;
    let isDone = false;
    const count = () => {
      turns++;
      if (!isDone) setImmediate(count);
    };
    setImmediate(count);
    const inTurns = await jobOverheadsInTurns(store, job.name, job.timingKey);
    isDone = true;
    expect(inTurns).toEqual(atOnce);
    // The timing history, then each of the two builds in three pieces.
    expect(turns).toBeGreaterThanOrEqual(5);

    // Once learned (a build's end starts this too), warming again has nothing to do until another build ends.
    await warmJobOverheads(store, job.name, job.timingKey);
    let isSettled = false;
    void warmJobOverheads(store, job.name, job.timingKey).then(() => { isSettled = true; });
    await Promise.resolve();
    await Promise.resolve();
    expect(isSettled).toBe(true);
  });
});
