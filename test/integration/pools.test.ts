/**
 * Pools (SPEC §13) with a real master and real worker processes: the master starts `clusterrunner worker`
 * (provider local) or the test's own scripts (provider command), sizes the pool by the work, replaces lost
 * workers, reaps idle ones, backs off on failed starts, and is resized live.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConf } from '../../shared/conf.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { startMaster } from '../../master/server.ts';
import { isGroupAlive } from '../../shared/process.ts';
import { freePort } from '../support/build-results.ts';
import { CLI, api, cleanupAll, eventually, postBuild, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

/** Fast heartbeats and short pool windows, so that each step takes well under a second or two. */
const GENERAL = { heartbeat_interval: '0.2', kill_grace_seconds: '0.5', master_unreachable_seconds: '30', no_worker_timeout_seconds: '0' };

interface PoolMaster {
  readonly url: string;
  readonly secret: string;
  readonly base: string;
  close(): Promise<void>;
}

async function startPoolMaster(pools: Record<string, Record<string, string | number>>, base = tempDir('cr-pool-'), secret = randomBytes(16).toString('hex'), port = 0): Promise<PoolMaster> {
  let text = `[general]\nsecret = ${secret}\nbase_directory = ${base}\n`;
  for (const [key, value] of Object.entries(GENERAL)) text += `${key} = ${value}\n`;
  for (const [name, keys] of Object.entries(pools)) {
    text += `[pool ${name}]\n`;
    for (const [key, value] of Object.entries(keys)) text += `${key} = ${value}\n`;
  }
  const file = join(base, 'master.conf');
  writeFileSync(file, text, { mode: 0o600 });
  const conf = { ...loadConf({ file, role: 'master', env: {} }), port };
  const server = await startMaster({ conf, log: createSilentLogger(), version: 'test', host: '127.0.0.1' });
  let isClosed = false;
  const master: PoolMaster = {
    url: server.url, secret, base,
    close: async () => {
      if (isClosed) return;
      isClosed = true;
      await server.close();
    },
  };
  // The pool's workers outlive the master by design; the test ends them (and their process groups).
  afterEachKill(master);
  return master;
}

const masters: PoolMaster[] = [];
const pids = new Set<number>();
function afterEachKill(master: PoolMaster): void {
  masters.push(master);
}
afterEach(async () => {
  for (const master of masters.splice(0)) await master.close().catch(() => undefined);
  for (const pid of pids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  pids.clear();
});

async function pool(master: PoolMaster, name: string): Promise<any> {
  const response = await api(master, 'GET', `/v2/pools/${name}`);
  expect(response.status).toBe(200);
  for (const worker of response.body.pool.workers) if (worker.pid) pids.add(worker.pid);
  return response.body.pool;
}

async function workerNames(master: PoolMaster): Promise<string[]> {
  return (await api(master, 'GET', '/v1/worker')).body.workers.map((worker: { name: string }) => worker.name);
}

function sleepyBuild(seconds: number, atoms: number) {
  return { type: 'directory', project_directory: tempDir(), config: { commands: [`sleep ${seconds}`], atomizers: [{ X: `seq 1 ${atoms}` }] } };
}

describe('a local pool', () => {
  it('min 0 / max 2: starts workers for a build and reaps them after it', async () => {
    const master = await startPoolMaster({ p: { provider: 'local', min_workers: 0, max_workers: 2, reap_idle_after_seconds: 1, start_timeout_seconds: 60 } });
    expect((await pool(master, 'p')).desired_workers).toBe(0);
    expect(await workerNames(master)).toEqual([]);

    const id = await postBuild(master, sleepyBuild(1, 4));
    await eventually('two pool workers', async () => (await pool(master, 'p')).connected_workers === 2, 60_000);
    const names = await workerNames(master);
    expect(names).toHaveLength(2);
    expect(names.every((name) => name.startsWith('p-'))).toBe(true);
    const workers = (await api(master, 'GET', '/v2/workers')).body.workers;
    expect(workers.every((worker: { num_executors: number }) => worker.num_executors === 1)).toBe(true);
    expect((await waitForBuild(master, id, undefined, 60_000)).status).toBe('SUCCESS');

    await eventually('the pool reaped to zero', async () => {
      const view = await pool(master, 'p');
      return view.workers.length === 0 && view.connected_workers === 0;
    }, 30_000);
    expect(await workerNames(master)).toEqual([]);
    const events = (await api(master, 'GET', '/v1/eventlog')).body.events;
    expect(events.filter((event: any) => event.__tag__ === 'POOL_WORKER_STARTED')).toHaveLength(2);
    expect(events.filter((event: any) => event.__tag__ === 'POOL_WORKER_STOPPED' && event.reason === 'idle')).toHaveLength(2);
    const metrics = (await api(master, 'GET', '/v1/metrics')).text;
    expect(metrics).toContain('clusterrunner_pool_workers{pool="p",state="desired"} 0');
  }, 120_000);

  it('min 1 keeps one worker, replaces it when it is killed, and finds it again after a master restart', async () => {
    const base = tempDir('cr-pool-');
    const secret = randomBytes(16).toString('hex');
    const poolConf = { p: { provider: 'local', min_workers: 1, max_workers: 2, reap_idle_after_seconds: 0.5, replace_down_after_seconds: 0.5 } };
    // A fixed port: the worker comes back to the same address after the restart.
    const port = await freePort();
    let master = await startPoolMaster(poolConf, base, secret, port);
    const first = await eventually('one pool worker', async () => {
      const view = await pool(master, 'p');
      return view.connected_workers === 1 ? view.workers[0] : null;
    }, 60_000);
    expect((await pool(master, 'p')).desired_workers).toBe(1);
    // The dashboard's workers page shows the pool and names it on its worker's row (SPEC §13, §14).
    const page = await (await fetch(`${master.url}/ui/workers`)).text();
    expect(page).toContain('data-pool="p"');
    expect(page).toMatch(new RegExp(`<td>${first.name}</td><td>p</td>`));

    // Restart the master: the worker reconnects and is the pool's again, with no second one started.
    await master.close();
    master = await startPoolMaster(poolConf, base, secret, port);
    await eventually('the worker found again', async () => {
      const view = await pool(master, 'p');
      return view.connected_workers === 1 && view.workers.length === 1 && view.workers[0].name === first.name && view.workers[0].state === 'running';
    }, 60_000);
    expect(await workerNames(master)).toEqual([first.name]);

    // Kill it: after replace_down_after_seconds another one takes its place.
    process.kill(first.pid, 'SIGKILL');
    const second = await eventually('a replacement', async () => {
      const view = await pool(master, 'p');
      return view.connected_workers === 1 && view.workers.length === 1 && view.workers[0].name !== first.name && view.workers[0].state === 'running' ? view.workers[0] : null;
    }, 60_000);
    expect(second.state).toBe('running');
    // min 1 keeps it: the reap window passes several times over and it stays.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect((await pool(master, 'p')).workers.map((worker: { name: string }) => worker.name)).toEqual([second.name]);
    const events = (await api(master, 'GET', '/v1/eventlog')).body.events;
    expect(events.some((event: any) => event.__tag__ === 'POOL_WORKER_STOPPED' && event.worker === first.name && event.reason === 'down')).toBe(true);
  }, 180_000);

  it('a worker replaced as down that comes back while it is stopped neither counts nor takes work', async () => {
    const master = await startPoolMaster({ p: { provider: 'local', min_workers: 1, max_workers: 1, reap_idle_after_seconds: 30, replace_down_after_seconds: 0.5 } });
    const first = await eventually('one pool worker', async () => {
      const view = await pool(master, 'p');
      return view.connected_workers === 1 ? view.workers[0] : null;
    }, 60_000);
    // Frozen (the chaos soak's fault): lost, replaced, and its stop (SIGTERM) waits until it thaws.
    process.kill(first.pid, 'SIGSTOP');
    await eventually('the frozen worker being stopped and another running', async () => {
      const view = await pool(master, 'p');
      const states = new Map(view.workers.map((worker: { name: string; state: string }) => [worker.name, worker.state]));
      return states.get(first.name) === 'stopping' && [...states.values()].includes('running') ? true : null;
    }, 60_000);
    const id = await postBuild(master, sleepyBuild(0.3, 6));
    process.kill(first.pid, 'SIGCONT');
    let mostConnected = 0;
    for (let polls = 0; polls < 40; polls++) {
      mostConnected = Math.max(mostConnected, (await pool(master, 'p')).connected_workers);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect((await waitForBuild(master, id, undefined, 60_000)).status).toBe('SUCCESS');
    expect(mostConnected).toBe(1);
    const events = (await api(master, 'GET', '/v1/eventlog')).body.events;
    expect(events.filter((event: any) => event.__tag__ === 'ATOM_START' && event.build_id === id && event.worker === first.name)).toEqual([]);
  }, 120_000);

  it('PUT /v2/pools/:name changes the size live, and is authenticated and validated', async () => {
    const master = await startPoolMaster({ p: { provider: 'local', min_workers: 0, max_workers: 3, reap_idle_after_seconds: 60 } });
    expect((await api(master, 'PUT', '/v2/pools/p', { json: { min_workers: 2 }, sign: false })).status).toBe(401);
    expect((await api(master, 'PUT', '/v2/pools/p', { json: { min_workers: 2, size: 1 } })).body.error).toContain('size');
    expect((await api(master, 'PUT', '/v2/pools/p', { json: { min_workers: -1 } })).status).toBe(400);
    expect((await api(master, 'PUT', '/v2/pools/p', { json: { min_workers: 4 } })).status).toBe(409);
    expect((await api(master, 'PUT', '/v2/pools/nope', { json: { min_workers: 1 } })).status).toBe(404);

    const grown = await api(master, 'PUT', '/v2/pools/p', { json: { min_workers: 2 } });
    expect(grown.status).toBe(200);
    expect(grown.body.pool.desired_workers).toBe(2);
    expect((await api(master, 'GET', '/v2/pools/p/desired')).body).toEqual({ desired_workers: 2 });
    await eventually('two workers', async () => (await pool(master, 'p')).connected_workers === 2, 60_000);

    // Below what runs: idle workers above max_workers go at once, without waiting out the reap window.
    const shrunk = await api(master, 'PUT', '/v2/pools/p', { json: { min_workers: 0, max_workers: 1 } });
    expect(shrunk.body.pool.max_workers).toBe(1);
    await eventually('one worker left', async () => {
      const view = await pool(master, 'p');
      return view.connected_workers === 1 && view.workers.length === 1;
    }, 30_000);
    const list = (await api(master, 'GET', '/v2/pools')).body.pools;
    expect(list.map((view: { name: string; provider: string }) => [view.name, view.provider])).toEqual([['p', 'local']]);
    expect(list[0]).toMatchObject({ min_workers: 0, max_workers: 1, executors: { total: 1, in_use: 0 }, cpu: { cores: expect.any(Number) } });
  }, 120_000);
});

describe('a command pool', () => {
  function scripts(dir: string) {
    const start = join(dir, 'start.sh');
    const stop = join(dir, 'stop.sh');
    writeFileSync(start, [
      '#!/bin/bash',
      `echo "$POOL $WORKER_NAME $MASTER_URL" >> ${dir}/started`,
      `nohup ${process.execPath} ${CLI} worker -c "$CONF" -m "$MASTER_URL" -n "$WORKER_NAME" --pool "$POOL" > ${dir}/$WORKER_NAME.log 2>&1 &`,
      `echo $! > ${dir}/$WORKER_NAME.pid`,
    ].join('\n'));
    writeFileSync(stop, [
      '#!/bin/bash',
      `echo "$WORKER_NAME" >> ${dir}/stopped`,
      `kill "$(cat ${dir}/$WORKER_NAME.pid)"`,
    ].join('\n'));
    chmodSync(start, 0o755);
    chmodSync(stop, 0o755);
    return { start, stop };
  }

  it('runs its start command for work and its stop command when the worker is reaped', async () => {
    const dir = tempDir('cr-pool-scripts-');
    const { start, stop } = scripts(dir);
    const base = tempDir('cr-pool-');
    const master = await startPoolMaster({
      c: { provider: 'command', max_workers: 1, executors_per_worker: 1, start_command: `CONF=${join(base, 'master.conf')} ${start}`, stop_command: stop, reap_idle_after_seconds: 0.5 },
    }, base);
    const id = await postBuild(master, sleepyBuild(0.2, 2));
    expect((await waitForBuild(master, id, undefined, 60_000)).status).toBe('SUCCESS');
    const started = readFileSync(join(dir, 'started'), 'utf8').trim().split('\n');
    expect(started).toHaveLength(1);
    const [poolName, workerName, masterUrl] = started[0]!.split(' ');
    expect(poolName).toBe('c');
    expect(masterUrl).toMatch(/^http:\/\/.+:\d+$/);
    await eventually('the stop command ran', () => existsSync(join(dir, 'stopped')) && readFileSync(join(dir, 'stopped'), 'utf8').trim() === workerName, 30_000);
    await eventually('the pool is empty', async () => (await pool(master, 'c')).workers.length === 0, 30_000);
    const pid = Number(readFileSync(join(dir, `${workerName}.pid`), 'utf8'));
    await eventually('the worker process gone', () => !isGroupAlive(pid), 10_000);
  }, 120_000);

  it('backs off when its start command fails, and says so in the pool and the event log', async () => {
    const master = await startPoolMaster({
      bad: { provider: 'command', min_workers: 1, max_workers: 1, start_command: 'echo no capacity left >&2 && exit 3' },
    });
    const view = await eventually('a reported failure', async () => {
      const current = await pool(master, 'bad');
      return current.last_error !== null && current.next_start_at !== null ? current : null;
    });
    expect(view.last_error.message).toContain('start command exited with 3');
    expect(view.last_error.message).toContain('no capacity left');
    expect(view.consecutive_failures).toBeGreaterThanOrEqual(1);
    // Backing off: a second failure waits at least a second, a third two more.
    await eventually('three failures', async () => (await pool(master, 'bad')).consecutive_failures >= 3, 30_000);
    const failures = (await api(master, 'GET', '/v1/eventlog')).body.events.filter((event: any) => event.__tag__ === 'POOL_WORKER_START_FAILED');
    expect(failures.length).toBeGreaterThanOrEqual(3);
    const gaps = failures.slice(1).map((event: any, index: number) => event.__timestamp__ - failures[index].__timestamp__);
    expect(gaps[0]).toBeGreaterThanOrEqual(0.9);
    expect(gaps[1]).toBeGreaterThanOrEqual(1.9);
  }, 60_000);
});

describe('pool configuration', () => {
  it('names the section and the key of every problem', () => {
    const dir = tempDir();
    const file = join(dir, 'bad.conf');
    writeFileSync(file, [
      '[general]', 'secret = abcdefghij',
      '[pool a]', 'provider = local', 'max_workers = two',
      '[pool b]', 'provider = command', 'min_workers = 3', 'max_workers = 2',
      '[pool c]', 'provider = local', 'max_workers = 1', 'start_command = x', 'colour = blue',
      '[pool d]', 'max_workers = 1',
    ].join('\n'), { mode: 0o600 });
    let message = '';
    try {
      loadConf({ file, role: 'master', env: {} });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain('"max_workers" in [pool a] must be an integer from 1 to 1000 (got "two")');
    expect(message).toContain('"min_workers" (3) in [pool b] must not be above "max_workers" (2)');
    expect(message).toContain('"start_command" is missing in [pool b]');
    expect(message).toContain('unknown key "colour" in [pool c]');
    expect(message).toContain('"provider" is missing in [pool d]');
    expect(message).toMatch(/bad\.conf line 5: "max_workers" in \[pool a\]/);
  });

  it('reads a good section, which a worker role ignores', () => {
    const dir = tempDir();
    const file = join(dir, 'good.conf');
    writeFileSync(file, '[general]\nsecret = abcdefghij\n[pool linux]\nprovider = local\nmax_workers = 4\nexecutors_per_worker = 2\nlabels = linux, x86\nreap_idle_after_seconds = 1.5\n', { mode: 0o600 });
    const conf = loadConf({ file, role: 'master', env: {} });
    expect(conf.pools).toEqual([expect.objectContaining({
      name: 'linux', provider: 'local', minWorkers: 0, maxWorkers: 4, executorsPerWorker: 2, labels: ['linux', 'x86'], reapIdleAfterMs: 1500, startTimeoutMs: 120_000,
    })]);
    expect(loadConf({ file, role: 'worker', env: {} }).secret).toBe('abcdefghij');
  });
});
