/**
 * The daily commands of issue 16 (reading builds: status, list, workers, logs, attach, artifacts) as a user runs them: the real binary against a real master and worker on
 * loopback, each with and without --json, and the exit codes scripts rely on (0 SUCCESS, 1 FAILURE,
 * 2 ERROR/CANCELED, 3 usage or configuration, 4 master unreachable).
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../support/cluster.ts';
import { closeAll, TEST_TIMEOUT_MS, FAILING_JOB, clusterWithClient, finishedBuild } from './commands-support.ts';

afterAll(closeAll);

describe('status, list, workers, logs, attach, artifacts', () => {
  let fixture: Awaited<ReturnType<typeof clusterWithClient>>;
  let build: any;
  beforeAll(async () => {
    fixture = await clusterWithClient();
    build = await finishedBuild(fixture.master, FAILING_JOB);
    expect(build.status).toBe('FAILURE');
  }, TEST_TIMEOUT_MS);

  it('status ID: the build, exit code its result; status: the queue and the workers', async () => {
    const { master, cli } = fixture;
    const status = await cli(['status', String(build.id)]);
    expect(status.code, status.stderr).toBe(1);
    expect(status.stdout).toContain(`build ${build.id}: FAILURE, 3 atoms (2 passed, 1 failed)`);
    expect(status.stdout).toContain('failed atom 1/0 (exit code 1): export N="2";');
    const statusJson = await cli(['status', String(build.id), '--json']);
    expect(statusJson.code).toBe(1);
    expect(JSON.parse(statusJson.stdout).build).toMatchObject({ id: build.id, status: 'FAILURE', num_atoms: 3 });

    const overview = await cli(['status']);
    expect(overview.code, overview.stderr).toBe(0);
    expect(overview.stdout).toContain(`master ${master.url}: 0 builds queued or running, 1 worker`);
    const overviewJson = JSON.parse((await cli(['status', '--json'])).stdout);
    expect(overviewJson.queue).toEqual([]);
    expect(overviewJson.workers).toHaveLength(1);
  }, TEST_TIMEOUT_MS);

  it('list and workers, with and without --json', async () => {
    const { cli } = fixture;
    const list = await cli(['list']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`build +${build.id} +FAILURE +job Checks +3 atoms, 1 failed`));
    expect(JSON.parse((await cli(['list', '--json', '--limit', '5'])).stdout).builds.map((listed: any) => listed.id)).toEqual([build.id]);
    const badLimit = await cli(['list', '--limit', '500']);
    expect(badLimit.code).toBe(3);
    expect(badLimit.stderr).toContain('--limit');

    const workers = await cli(['workers']);
    expect(workers.code).toBe(0);
    expect(workers.stdout).toMatch(/worker +\d+ +test-worker-\w+ +alive, 0\/2 executors busy/);
    expect(JSON.parse((await cli(['workers', '--json'])).stdout).workers[0].num_executors).toBe(2);
  }, TEST_TIMEOUT_MS);

  it('logs: one atom or every atom, with and without --json', async () => {
    const { cli } = fixture;
    const oneAtom = await cli(['logs', String(build.id), '--atom', '1/0']);
    expect(oneAtom.code, oneAtom.stderr).toBe(0);
    expect(oneAtom.stdout).toBe('output of atom 2\n');
    expect(JSON.parse((await cli(['logs', String(build.id), '--atom', '1/0', '--json'])).stdout).content).toBe('output of atom 2\n');
    const all = await cli(['logs', String(build.id)]);
    expect(all.stdout).toContain('==> atom 0/0 (exit code 0): export N="1";\noutput of atom 1\n');
    expect(all.stdout).toContain('==> atom 1/0 (exit code 1): export N="2";\noutput of atom 2\n');
    const allJson = JSON.parse((await cli(['logs', String(build.id), '--json'])).stdout);
    expect(allJson.atoms.map((atom: any) => atom.content)).toEqual(['output of atom 1\n', 'output of atom 2\n', 'output of atom 3\n']);
    expect((await cli(['logs', String(build.id), '--atom', 'one'])).code).toBe(3);
  }, TEST_TIMEOUT_MS);

  it('attach: reports the build and fetches its results; artifacts: downloads them', async () => {
    const { cli } = fixture;
    const work = tempDir('cr-cli-work-');
    const attach = await cli(['attach', String(build.id)], work);
    expect(attach.code, attach.stderr).toBe(1);
    expect(attach.stdout).toContain(`build ${build.id}: FAILURE, 3 atoms (2 passed, 1 failed)`);
    expect(attach.stdout).toContain('  | output of atom 2');
    expect(readFileSync(join(work, 'build_results', String(build.id), 'failures.txt'), 'utf8')).toBe('artifact_1_0');
    expect(readlinkSync(join(work, 'build_results', 'latest'))).toBe(String(build.id));
    const attachJson = await cli(['attach', String(build.id), '--json', '--no-results'], work);
    expect(attachJson.code).toBe(1);
    expect(JSON.parse(attachJson.stdout)).toMatchObject({ build: { id: build.id, status: 'FAILURE' }, results: null });

    const into = join(tempDir('cr-cli-out-'), 'artifacts');
    const artifacts = await cli(['artifacts', String(build.id), '-o', into]);
    expect(artifacts.code, artifacts.stderr).toBe(0);
    expect(readFileSync(join(into, 'artifact_1_0', 'clusterrunner_exit_code'), 'utf8')).toBe('1\n');
    const again = await cli(['artifacts', String(build.id), '-o', into]);
    expect(again.code).toBe(3);
    expect(again.stderr).toContain('not empty');
    const artifactsJson = await cli(['artifacts', String(build.id), '--json'], work);
    expect(JSON.parse(artifactsJson.stdout)).toMatchObject({ build_id: build.id, folder: join(work, 'build_results', String(build.id)) });
  }, TEST_TIMEOUT_MS);
});

