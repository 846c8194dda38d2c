/**
 * PUT /v2/pools/:name is kept in SQLite (SPEC §13, issue 12): a real master process restarted on the same
 * base folder shows the size set by PUT and its pool follows it; {"reset": true} and an edit of the pool's
 * sizes in the conf both give the conf its say again.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../support/build-results.ts';
import { api, cleanupAll, eventually, spawnCli, tempDir, writeConf, type CliProcess } from '../support/cluster.ts';

/** Pool workers outlive their master by design (a restart finds them again): the test ends them. */
const poolPids = new Set<number>();
afterEach(async () => {
  await cleanupAll();
  for (const pid of poolPids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  poolPids.clear();
});

interface CliMaster {
  readonly url: string;
  readonly secret: string;
  readonly process: CliProcess;
}

async function startCliMaster(dir: string, port: number, secret: string, pool: { min_workers: number; max_workers: number }): Promise<CliMaster> {
  const conf = writeConf(dir, 'master', {
    general: { secret, base_directory: join(dir, 'base'), heartbeat_interval: 0.2, kill_grace_seconds: 0.5, no_worker_timeout_seconds: 0 },
    'pool p': { provider: 'local', ...pool, reap_idle_after_seconds: 0.5, start_timeout_seconds: 60 },
  });
  const child = spawnCli(['master', '-p', String(port), '-c', conf], { env: { HOME: dir } });
  const url = `http://127.0.0.1:${port}`;
  await eventually('the master to answer GET /', async () => {
    if (child.child.exitCode !== null) throw new Error(`master exited early: ${child.output()}`);
    return (await fetch(`${url}/`)).ok;
  }, 30_000);
  return { url, secret, process: child };
}

async function stop(master: CliMaster): Promise<void> {
  master.process.child.kill('SIGTERM');
  await master.process.exited;
}

async function poolView(master: CliMaster): Promise<any> {
  const response = await api(master, 'GET', '/v2/pools/p');
  expect(response.status).toBe(200);
  for (const worker of response.body.pool.workers) if (worker.pid) poolPids.add(worker.pid);
  return response.body.pool;
}

describe('a pool size set by PUT', () => {
  it('survives a master restart until a reset or an edit of the conf', async () => {
    const dir = tempDir('cr-pool-persist-');
    const port = await freePort();
    const secret = randomBytes(16).toString('hex');
    let master = await startCliMaster(dir, port, secret, { min_workers: 0, max_workers: 1 });
    expect((await api(master, 'PUT', '/v2/pools/p', { json: { reset: true, min_workers: 1 } })).body.error).toContain('"reset" goes alone');
    expect((await api(master, 'PUT', '/v2/pools/p', { json: { reset: false } })).body.error).toBe('"reset": must be true');
    const put = await api(master, 'PUT', '/v2/pools/p', { json: { min_workers: 1, max_workers: 2 } });
    expect(put.status).toBe(200);
    expect(put.body.pool.resized_at).toEqual(expect.any(Number));

    // A real restart of the master process: the size set by PUT holds, and the pool keeps one worker.
    await stop(master);
    master = await startCliMaster(dir, port, secret, { min_workers: 0, max_workers: 1 });
    expect(await poolView(master)).toMatchObject({ min_workers: 1, max_workers: 2, desired_workers: 1, resized_at: put.body.pool.resized_at });
    expect((await api(master, 'GET', '/v2/pools/p/desired')).body).toEqual({ desired_workers: 1 });
    // The pool follows it: one worker, started before the restart and found again, or started since.
    await eventually('one pool worker', async () => (await poolView(master)).workers.length === 1, 60_000);

    // A reset goes back to the conf's sizes (and drops the saved row: the restart below reads the conf alone).
    const reset = await api(master, 'PUT', '/v2/pools/p', { json: { reset: true } });
    expect(reset.body.pool).toMatchObject({ min_workers: 0, max_workers: 1, resized_at: null });

    // A PUT, then the conf's sizes for the pool edited: the edited conf wins at the next start.
    expect((await api(master, 'PUT', '/v2/pools/p', { json: { min_workers: 1 } })).status).toBe(200);
    await stop(master);
    master = await startCliMaster(dir, port, secret, { min_workers: 0, max_workers: 3 });
    expect(await poolView(master)).toMatchObject({ min_workers: 0, max_workers: 3, resized_at: null });
    await stop(master);
  }, 120_000);
});
