/** `clusterrunner shutdown` against a real master with real workers (in this process) on loopback. */
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, eventually, startTestMaster, startTestWorker } from '../support/cluster.ts';
import { runCli, workersOf } from '../support/build-results.ts';
import { clientSetup } from './helpers.ts';

afterEach(cleanupAll);

async function clusterWithWorkers(names: readonly string[]) {
  const master = await startTestMaster();
  const workers = [];
  for (const name of names) workers.push(await startTestWorker(master, { name }));
  await eventually('the workers to connect', async () => (await workersOf(master)).length === names.length);
  const idOf = async (name: string) => (await workersOf(master)).find((worker) => worker.name === name)!.id as number;
  return { master, workers, idOf, client: clientSetup(master.secret) };
}

describe('clusterrunner shutdown', () => {
  it('-w ID drains that worker only: it leaves the list and exits', async () => {
    const { master, workers, idOf, client } = await clusterWithWorkers(['keep-me', 'drain-me']);
    const id = await idOf('drain-me');

    const run = await runCli(['shutdown', '-m', master.url, '-c', client.conf, '-w', String(id)], { env: client.env });

    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain(`shutting down worker ${id}`);
    expect((await workersOf(master)).map((worker) => worker.name)).toEqual(['keep-me']);
    expect(await workers[1]!.daemon.exited).toBe(0);
  });

  it('-w with an unknown id exits non-zero with the master\'s 404 message and drains nothing', async () => {
    const { master, client } = await clusterWithWorkers(['stays']);

    const run = await runCli(['shutdown', '-m', master.url, '-c', client.conf, '-w', '999'], { env: client.env });

    expect(run.code).not.toBe(0);
    expect(run.code).not.toBe('TIMEOUT');
    expect(run.stderr).toContain('HTTP 404');
    expect(run.stderr).toContain('Invalid worker id: 999.');
    expect((await workersOf(master)).map((worker) => worker.name)).toEqual(['stays']);
  });

  it('-a drains every worker', async () => {
    const { master, workers, client } = await clusterWithWorkers(['one', 'two']);

    const run = await runCli(['shutdown', '--master-url', master.url, '-c', client.conf, '--all-workers'], { env: client.env });

    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(await workersOf(master)).toEqual([]);
    for (const worker of workers) expect(await worker.daemon.exited).toBe(0);
  });

  it('takes the master from the conf file, and says what to give when no worker is named', async () => {
    const { master } = await clusterWithWorkers(['w']);
    const client = clientSetup(master.secret, { master_url: master.url });
    const missing = await runCli(['shutdown', '-c', client.conf], { env: client.env });
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('-a/--all-workers');

    const wrongSecret = clientSetup('some-other-secret', { master_url: master.url });
    const refused = await runCli(['shutdown', '-c', wrongSecret.conf, '-a'], { env: wrongSecret.env });
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain(`signed with the secret of ${wrongSecret.conf}`);
    expect(await workersOf(master)).toHaveLength(1);

    const all = await runCli(['shutdown', '-c', client.conf, '-a'], { env: client.env });
    expect(all.code, all.stdout + all.stderr).toBe(0);
    expect(await workersOf(master)).toEqual([]);
  });
});
