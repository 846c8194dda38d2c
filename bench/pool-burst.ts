/**
 * A pool under a burst (SPEC §13, issue 12's closing note): a `local` pool with max_workers 4 and no worker
 * connected at the start takes 20 builds posted at once. Printed: the time from the first POST to the first
 * atom running (the pool has to start a worker process first), the most workers seen, the time to finish
 * all 20, and the workers still running once the reap window has passed. Run: npx tsx bench/pool-burst.ts
 * (BENCH_POOL_ATOMS, BENCH_POOL_ATOM_SECONDS, BENCH_POOL_REAP_SECONDS change the shape).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMaster } from '../master/server.ts';
import { loadConf } from '../shared/conf.ts';
import { createSilentLogger } from '../shared/log.ts';
import { signRequest } from '../shared/auth.ts';
import { isGroupAlive } from '../shared/process.ts';

const BUILDS = 20;
const ATOMS = Number(process.env['BENCH_POOL_ATOMS'] ?? 4);
const ATOM_SECONDS = Number(process.env['BENCH_POOL_ATOM_SECONDS'] ?? 0.5);
const REAP_SECONDS = Number(process.env['BENCH_POOL_REAP_SECONDS'] ?? 5);

const base = mkdtempSync(join(tmpdir(), 'cr-bench-pool-'));
const secret = randomBytes(16).toString('hex');
const file = join(base, 'master.conf');
writeFileSync(file, [
  '[general]', `secret = ${secret}`, `base_directory = ${base}`, 'heartbeat_interval = 1', 'no_worker_timeout_seconds = 0',
  '[pool burst]', 'provider = local', 'min_workers = 0', 'max_workers = 4', 'executors_per_worker = 2',
  `reap_idle_after_seconds = ${REAP_SECONDS}`, 'start_timeout_seconds = 120',
].join('\n'), { mode: 0o600 });
const master = await startMaster({ conf: { ...loadConf({ file, role: 'master', env: {} }), port: 0 }, log: createSilentLogger(), version: 'bench', host: '127.0.0.1' });
const pids = new Set<number>();

async function call(method: string, path: string, body?: unknown): Promise<any> {
  const text = body === undefined ? '' : JSON.stringify(body);
  const headers = method === 'GET' ? {} : signRequest(secret, method, path, text);
  const response = await fetch(`${master.url}${path}`, { method, headers: { 'Content-Type': 'application/json', ...headers }, ...(body === undefined ? {} : { body: text }) });
  return response.json();
}

async function poolView(): Promise<any> {
  const view = (await call('GET', '/v2/pools/burst')).pool;
  for (const worker of view.workers) if (worker.pid) pids.add(worker.pid);
  return view;
}

try {
  const project = mkdtempSync(join(tmpdir(), 'cr-bench-pool-project-'));
  const postedAt = Date.now();
  const ids: number[] = [];
  for (let i = 0; i < BUILDS; i++) {
    const answer = await call('POST', '/v1/build', {
      type: 'directory', project_directory: project, job_name: 'burst',
      config: { commands: [`sleep ${ATOM_SECONDS}`], atomizers: [{ X: `seq 1 ${ATOMS}` }] },
    });
    ids.push(answer.build_id as number);
  }
  const postedAllMs = Date.now() - postedAt;
  let firstAtomMs: number | null = null;
  // Where the wait goes: the pool's first start, the first worker connected, the first setup done.
  const firsts = new Map<string, number>();
  let mostWorkers = 0;
  for (;;) {
    if (firstAtomMs === null) {
      const events = (await call('GET', '/v1/eventlog?since_id=0')).events as { __tag__: string; __timestamp__: number }[];
      for (const event of events) if (!firsts.has(event.__tag__)) firsts.set(event.__tag__, Math.round(event.__timestamp__ * 1000 - postedAt));
      firstAtomMs = firsts.get('ATOM_START') ?? null;
    }
    mostWorkers = Math.max(mostWorkers, (await poolView()).connected_workers as number);
    const builds = await Promise.all(ids.map(async (id) => (await call('GET', `/v1/build/${id}`)).build.status as string));
    if (builds.every((status) => ['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'].includes(status))) {
      const finishedMs = Date.now() - postedAt;
      const statuses = [...new Set(builds)].join(',');
      const atEnd = await poolView();
      await new Promise((resolve) => setTimeout(resolve, (REAP_SECONDS + 3) * 1000));
      const afterReap = await poolView();
      const alive = [...pids].filter((pid) => isGroupAlive(pid)).length;
      process.stdout.write(
        `pool burst: ${BUILDS} builds x ${ATOMS} atoms of ${ATOM_SECONDS} s, local pool max 4 x 2 executors, reap ${REAP_SECONDS} s\n` +
        `  POSTs took ${postedAllMs} ms; first atom running ${firstAtomMs} ms after the first POST (no worker at the start)\n` +
        `  after the first POST: first pool start ${firsts.get('POOL_WORKER_STARTED')} ms, first worker connected ${firsts.get('WORKER_CONNECTED')} ms, ` +
        `first setup finished ${firsts.get('BUILD_SETUP_FINISH')} ms\n` +
        `  most workers connected ${mostWorkers}; all builds terminal (${statuses}) after ${finishedMs} ms with ${atEnd.connected_workers} connected\n` +
        `  ${REAP_SECONDS + 3} s later: ${afterReap.connected_workers} connected, ${afterReap.workers.length} pool workers listed, ${alive} worker processes alive\n`,
      );
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
} finally {
  await master.close();
  for (const pid of pids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  rmSync(base, { recursive: true, force: true });
}
