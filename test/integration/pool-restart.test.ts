/**
 * Pool workers across a master restart, two cases the chaos soak in pool mode found:
 * - a local pool worker that died while its master was down: the restarted master used to drop its row and
 *   keep its folder under <base_directory>/pools/ for ever (a whole worker base directory per death);
 * - a worker being stopped when the master stops: its row stayed, and the next master took the stopped
 *   worker back (a command pool then ran its stop command a second time);
 * - the same when the master is killed during the stop: the next master took the worker back as well, which
 *   could put the pool above max_workers and have a busy worker stopped in its place. It finishes the stop.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConf } from '../../shared/conf.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { isGroupAlive } from '../../shared/process.ts';
import { openDatabase } from '../../master/store/database.ts';
import { startMaster, type MasterServer } from '../../master/server.ts';
import { freePort } from '../support/build-results.ts';
import { api, cleanupAll, eventually, spawnCli, tempDir, writeConf } from '../support/cluster.ts';

const servers: MasterServer[] = [];
const pids = new Set<number>();
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close().catch(() => undefined);
  for (const pid of pids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  pids.clear();
  await cleanupAll();
});

const LOCAL_POOL = ['[pool p]', 'provider = local', 'min_workers = 1', 'max_workers = 1', 'start_timeout_seconds = 60'];

async function start(base: string, secret: string, pool = LOCAL_POOL): Promise<{ url: string; secret: string; server: MasterServer }> {
  const file = join(base, 'master.conf');
  writeFileSync(file, [
    '[general]', `secret = ${secret}`, `base_directory = ${base}`, 'heartbeat_interval = 0.2', 'kill_grace_seconds = 0.5', ...pool,
  ].join('\n'), { mode: 0o600 });
  const server = await startMaster({ conf: { ...loadConf({ file, role: 'master', env: {} }), port: 0 }, log: createSilentLogger(), version: 'test', host: '127.0.0.1' });
  servers.push(server);
  return { url: server.url, secret, server };
}

async function workers(master: { url: string; secret: string }): Promise<{ name: string; pid: number | null }[]> {
  const list = (await api(master, 'GET', '/v2/pools/p')).body.pool.workers as { name: string; pid: number | null }[];
  for (const worker of list) if (worker.pid) pids.add(worker.pid);
  return list;
}

/** A stop command that records each worker it stops in `stopped`, then waits until the file `go` exists. */
function gatedStopCommand(base: string): { stopped: string; go: string; script: string } {
  const stopped = join(base, 'stopped');
  const go = join(base, 'go');
  const script = join(base, 'stop.sh');
  writeFileSync(script, `#!/bin/sh\necho "$WORKER_NAME" >> ${stopped}\nwhile [ ! -e ${go} ]; do sleep 0.05; done\n`, { mode: 0o755 });
  return { stopped, go, script };
}

describe('a local pool worker that died while the master was down', () => {
  it('has its folder removed, a stop logged and a replacement started', async () => {
    const base = tempDir('cr-pool-restart-');
    const secret = randomBytes(16).toString('hex');
    let master = await start(base, secret);
    const [first] = await eventually('a pool worker started', async () => ((await workers(master)).length === 1 ? workers(master) : null), 30_000);
    const folder = join(base, 'pools', 'p', first!.name);
    expect(existsSync(folder)).toBe(true);

    await master.server.close();
    process.kill(-first!.pid!, 'SIGKILL');
    await eventually('the worker dead', () => !isGroupAlive(first!.pid!), 10_000);

    master = await start(base, secret);
    await eventually('its folder removed', () => !existsSync(folder), 10_000);
    const replacement = await eventually('a replacement', async () => (await workers(master)).find((worker) => worker.name !== first!.name), 30_000);
    expect(replacement.name).toMatch(/^p-/);
    const stopped = (await api(master, 'GET', '/v1/eventlog')).body.events.filter((event: any) => event.__tag__ === 'POOL_WORKER_STOPPED');
    expect(stopped).toEqual([expect.objectContaining({ worker: first!.name, reason: 'down', why: 'gone when the master started' })]);
  }, 60_000);

  it('is not taken back by the next master when it was being stopped as the master stopped', async () => {
    const base = tempDir('cr-pool-restart-');
    const secret = randomBytes(16).toString('hex');
    // Every start fails; each failed start runs the stop command, which waits for the test's go-ahead.
    const { stopped, go, script } = gatedStopCommand(base);
    const pool = ['[pool p]', 'provider = command', 'min_workers = 1', 'max_workers = 1', 'start_command = exit 3', `stop_command = ${script}`];
    let master = await start(base, secret, pool);
    await eventually('a stop command running', () => existsSync(stopped), 30_000);
    const first = readFileSync(stopped, 'utf8').trim().split('\n')[0]!;
    // The master stops while the stop command runs (close() waits for it).
    const closing = master.server.close();
    writeFileSync(go, '');
    await closing;

    const db = openDatabase(join(base, 'clusterrunner.db'));
    const rows = db.prepare('SELECT name FROM pool_workers').pluck().all();
    db.close();
    expect(rows).not.toContain(first);
    master = await start(base, secret, pool);
    expect((await workers(master)).map((worker) => worker.name)).not.toContain(first);
    expect(readFileSync(stopped, 'utf8').trim().split('\n').filter((name) => name === first)).toHaveLength(1);
  }, 60_000);

  it('has its stop finished, not taken back, by the next master when the master was killed during the stop', async () => {
    const base = tempDir('cr-pool-restart-');
    const secret = randomBytes(16).toString('hex');
    const { stopped, go, script } = gatedStopCommand(base);
    const pool = { provider: 'command', min_workers: 1, max_workers: 1, start_command: 'exit 3', stop_command: script };
    const port = await freePort();
    const conf = writeConf(base, 'master', {
      general: { secret, base_directory: base, heartbeat_interval: 0.2, kill_grace_seconds: 0.5 }, 'pool p': pool,
    });
    const cli = spawnCli(['master', '-p', String(port), '-c', conf], { env: { HOME: base } });
    await eventually('a stop command running', () => existsSync(stopped), 30_000);
    const first = readFileSync(stopped, 'utf8').trim().split('\n')[0]!;
    // Killed mid-stop: nothing of the master runs its end.
    process.kill(-cli.child.pid!, 'SIGKILL');
    await cli.exited;

    const master = await start(base, secret, ['[pool p]', ...Object.entries(pool).map(([key, value]) => `${key} = ${value}`)]);
    expect((await workers(master)).map((worker) => worker.name)).not.toContain(first);
    writeFileSync(go, '');
    const events = await eventually('the stop finished', async () => {
      const list = (await api(master, 'GET', '/v1/eventlog')).body.events as any[];
      return list.some((event) => event.__tag__ === 'POOL_WORKER_STOPPED' && event.worker === first) ? list : null;
    }, 30_000);
    expect(events.find((event) => event.__tag__ === 'POOL_WORKER_STOPPED' && event.worker === first)).toMatchObject({ reason: 'restart' });
    const db = openDatabase(join(base, 'clusterrunner.db'));
    expect(db.prepare('SELECT name FROM pool_workers').pluck().all()).not.toContain(first);
    db.close();
  }, 60_000);
});
