import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

/** Atom values say how long each atom sleeps: one long atom, then several short ones. */
const JOB = {
  commands: ['sleep "${DURATION#*_}"'],
  atomizers: [{ DURATION: 'echo a_0.05; echo b_0.05; echo c_0.05; echo d_0.05; echo long_0.8; echo e_0.05' }],
};

async function subjobsOf(master: { url: string; secret: string }, id: number): Promise<{ id: number; atoms: any[] }[]> {
  return (await api(master, 'GET', `/v1/build/${id}/subjob`)).body.subjobs;
}

describe('timing history', () => {
  it('plans the next build of a job with the durations of the last one', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const project = tempDir();

    const first = await postBuild(master, { type: 'directory', project_directory: project, config: JOB });
    expect((await waitForBuild(master, first)).status).toBe('SUCCESS');
    const cold = await subjobsOf(master, first);
    // No history yet: one atom per subjob, in atomizer order (SPEC §4).
    expect(cold.map((subjob) => subjob.atoms.map((atom) => atom.command_string))).toEqual(
      ['a', 'b', 'c', 'd', 'long', 'e'].map((name) => [`export DURATION="${name}_${name === 'long' ? '0.8' : '0.05'}";`]),
    );
    expect(cold.flatMap((subjob) => subjob.atoms).every((atom) => atom.expected_time === null)).toBe(true);

    const second = await postBuild(master, { type: 'directory', project_directory: project, config: JOB });
    const build = await waitForBuild(master, second);
    expect(build).toMatchObject({ status: 'SUCCESS', num_atoms: 6 });
    const planned = await subjobsOf(master, second);
    // With history: the longest atom starts first, and the short ones are grouped.
    expect(planned[0]!.atoms[0].command_string).toBe('export DURATION="long_0.8";');
    expect(planned.length).toBeLessThan(6);
    const atoms = planned.flatMap((subjob) => subjob.atoms);
    expect(atoms).toHaveLength(6);
    for (const atom of atoms) expect(atom.expected_time).toBeGreaterThan(0);
    expect(atoms.find((atom) => atom.command_string.includes('long')).expected_time).toBeGreaterThan(0.5);
  });

  it('keeps the history of each job apart', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    await waitForBuild(master, await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB }));
    const other = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    await waitForBuild(master, other);
    const atoms = (await subjobsOf(master, other)).flatMap((subjob) => subjob.atoms);
    expect(atoms.every((atom) => atom.expected_time === null)).toBe(true);
  });

  it('lets two builds share two workers, and both finish', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    await startTestWorker(master, { executors: 2 });
    const config = { commands: ['sleep 0.2', 'echo $N > $ARTIFACT_DIR/n'], atomizers: [{ N: 'seq 1 8' }] };
    const ids = await Promise.all([1, 2].map(() => postBuild(master, { type: 'directory', project_directory: tempDir(), config })));
    const builds = await Promise.all(ids.map((id) => waitForBuild(master, id)));
    expect(builds.map((build) => build.status)).toEqual(['SUCCESS', 'SUCCESS']);
  });
});
