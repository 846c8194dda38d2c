/**
 * The master's HTTP API for workers (SPEC §2, §2.1, §6) and what it serves across a master restart (§5):
 * real in-process workers and masters on loopback.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { UUID, expectFailure, expectSessionHeaders, waitForWorkers, within } from '../support/http-expect.ts';

afterEach(cleanupAll);

/** SPEC §13's heartbeat figures change from one answer to the next; the rest of a worker's shape does not. */
const VOLATILE = ['last_heartbeat', 'cpu_count', 'load1', 'memory_total_bytes', 'memory_available_bytes', 'disk_free_bytes', 'health', 'health_reason'];
const stable = (worker: Record<string, unknown>) => Object.fromEntries(Object.entries(worker).filter(([key]) => !VOLATILE.includes(key)));

const TEN_LINES = {
  commands: ['for i in 0 1 2 3 4 5 6 7 8 9; do echo line_$i; done', 'echo $X > $ARTIFACT_DIR/x.txt'],
  atomizers: [{ X: 'seq 1 3' }],
};

describe('GET /v1/worker', () => {
  it('lists connected workers with the fields of SPEC §2.1, also as slaves and on /v1', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 3, name: 'worker-a' });
    const [worker] = await waitForWorkers(master, 1);
    expect(stable(worker)).toEqual({
      id: expect.any(Number), name: 'worker-a', url: 'worker-a', session_id: expect.any(String), num_executors: 3,
      num_executors_in_use: 0, current_build_ids: [], current_build_id: null, is_alive: true, is_in_shutdown_mode: false,
      pool: null, labels: [],
    });
    expect(Object.keys(worker)).toEqual(expect.arrayContaining(VOLATILE));
    expect(worker.session_id.length).toBeGreaterThan(0);

    const slaves = await api(master, 'GET', '/v1/slave');
    expect(slaves.status).toBe(200);
    expect(slaves.body.slaves.map(stable)).toEqual([stable(worker)]);
    expect(slaves.body).not.toHaveProperty('workers');
    expect((await api(master, 'GET', '/worker')).body.workers.map(stable)).toEqual([stable(worker)]);
    expect((await api(master, 'GET', '/v2/workers')).body.workers.map(stable)).toEqual([stable(worker)]);
    expect((await api(master, 'GET', '/v2/slaves')).body.slaves.map(stable)).toEqual([stable(worker)]);
    expect((await api(master, 'GET', '/v2/workers?offset=1')).body.workers).toEqual([]);

    const one = await api(master, 'GET', `/v1/worker/${worker.id}`);
    expect(one.status).toBe(200);
    expect(stable(one.body.worker)).toEqual(stable(worker));
    expect(stable((await api(master, 'GET', `/v1/slave/${worker.id}`)).body.slave)).toEqual(stable(worker));
    expectFailure(await api(master, 'GET', `/v1/worker/${worker.id + 100}`), 404);
    expectFailure(await api(master, 'GET', `/v1/slave/${worker.id + 100}`), 404);
    expectFailure(await api(master, 'GET', '/v1/worker/abc'), 400);

    for (const path of ['/', '/v1']) {
      const view = (await api(master, 'GET', path)).body.master;
      expect({ ...view, workers: view.workers.map(stable) }).toEqual({ status: 'Master service is up.', workers: [stable(worker)] });
    }
  });

  it('shows a worker that stopped without draining as not alive', async () => {
    const master = await startTestMaster();
    const worker = await startTestWorker(master, { name: 'worker-gone' });
    await waitForWorkers(master, 1);
    await worker.stop();
    const listed = await waitForWorkersMatching(master, (workers) => workers.length === 1 && workers[0].is_alive === false);
    expect(listed[0]).toMatchObject({ name: 'worker-gone', is_alive: false, num_executors_in_use: 0 });
    const metrics = (await api(master, 'GET', '/v1/metrics')).text;
    expect(metrics).toMatch(/^clusterrunner_workers\{state="dead"\} 1$/m);
  });
});

async function waitForWorkersMatching(master: { url: string; secret: string }, pred: (workers: any[]) => boolean): Promise<any[]> {
  return eventually('the workers listed as expected', async () => {
    const workers = (await api(master, 'GET', '/v1/worker')).body.workers as any[];
    return pred(workers) ? workers : null;
  });
}

describe('POST /v1/worker/shutdown', () => {
  it('refuses unknown ids with 404 before touching any worker, and bad bodies with 400', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { name: 'keep-1' });
    await startTestWorker(master, { name: 'keep-2' });
    const workers = await waitForWorkers(master, 2);
    const ids = workers.map((worker) => worker.id);

    expectFailure(await api(master, 'POST', '/v1/worker/shutdown', { json: { workers: [999] } }), 404);
    expectFailure(await api(master, 'POST', '/v1/worker/shutdown', { json: { workers: [ids[0], 999] } }), 404);
    expectFailure(await api(master, 'POST', '/v1/worker/shutdown', { json: { slaves: [ids[1], 999] } }), 404);
    expectFailure(await api(master, 'POST', '/v1/slave/shutdown', { json: { slaves: [999] } }), 404);
    expectFailure(await api(master, 'POST', '/v1/worker/999/shutdown'), 404);

    const bad: unknown[] = [{}, { workers: [] }, { workers: 'all' }, { workers: [1.5] }, { workers: [-1] }, { workers: ['one'] }, { workers: ['-1'] },
      { shutdown_all: 'yes' }, { everything: true }, [], null, 7];
    for (const body of bad) expectFailure(await api(master, 'POST', '/v1/worker/shutdown', { json: body }), 400);
    expect((await api(master, 'POST', '/v1/worker/shutdown', { json: { workers: [ids[0]], extra: 1 } })).body.error).toContain('extra');
    expectFailure(await api(master, 'POST', '/v1/worker/shutdown', { raw: '{"workers": [' }), 400);

    // Both still there, neither draining.
    const after = (await api(master, 'GET', '/v1/worker')).body.workers as any[];
    expect(after.map((worker) => worker.id).sort()).toEqual([...ids].sort());
    for (const worker of after) expect(worker).toMatchObject({ is_alive: true, is_in_shutdown_mode: false });
  });

  it('drains one worker by id: it leaves the list at once and exits 0', async () => {
    const master = await startTestMaster();
    const leaving = await startTestWorker(master, { name: 'leaving' });
    await startTestWorker(master, { name: 'staying' });
    const workers = await waitForWorkers(master, 2);
    const target = workers.find((worker) => worker.name === 'leaving');

    const response = await api(master, 'POST', `/v1/worker/${target.id}/shutdown`);
    expect(response.status).toBe(200);
    expect(response.body.STATUS).toBe('SUCCESS');
    const listed = (await api(master, 'GET', '/v1/worker')).body.workers as any[];
    expect(listed.map((worker) => worker.name)).toEqual(['staying']);
    expectFailure(await api(master, 'GET', `/v1/worker/${target.id}`), 404);
    expect(await within(leaving.daemon.exited, 15_000, 'the drained worker to exit')).toBe(0);
    expect((await api(master, 'GET', '/v1/worker')).body.workers.map((worker: any) => worker.name)).toEqual(['staying']);
  });

  it('drains a busy worker: it leaves the list at once, finishes its atom, then exits 0', async () => {
    const master = await startTestMaster();
    const busy = await startTestWorker(master, { name: 'busy' });
    const [worker] = await waitForWorkers(master, 1);
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(), config: { commands: ['echo started', 'sleep 1', 'echo finished'], atomizers: [{ X: 'echo 1' }] },
    });
    await eventually('the atom running', async () =>
      (await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/0`)).body?.atom?.state === 'IN_PROGRESS');

    const response = await api(master, 'POST', '/v1/worker/shutdown', { json: { workers: [worker.id] } });
    expect(response.status).toBe(200);
    expect(response.body.STATUS).toBe('SUCCESS');
    expect((await api(master, 'GET', '/v1/worker')).body.workers).toEqual([]);
    expect(await within(busy.daemon.exited, 15_000, 'the drained worker to exit')).toBe(0);
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    expect((await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/0/console`)).body.content).toBe('started\nfinished\n');
  });

  it('drains every worker with shutdown_all', async () => {
    const master = await startTestMaster();
    const first = await startTestWorker(master);
    const second = await startTestWorker(master, { executors: 2 });
    await waitForWorkers(master, 2);

    const response = await api(master, 'POST', '/v1/worker/shutdown', { json: { shutdown_all: true } });
    expect(response.status).toBe(200);
    expect(response.body.STATUS).toBe('SUCCESS');
    expect((await api(master, 'GET', '/v1/worker')).body.workers).toEqual([]);
    expect((await api(master, 'GET', '/v1')).body.master.workers).toEqual([]);
    expect(await within(first.daemon.exited, 15_000, 'the first worker to exit')).toBe(0);
    expect(await within(second.daemon.exited, 15_000, 'the second worker to exit')).toBe(0);
  });
});

describe('a master restart', () => {
  it('serves the same build, subjobs, console and artifacts; ids go on; the session changes', async () => {
    const base = tempDir('cr-master-');
    const secret = 'restart-secret-0123456789';
    const first = await startTestMaster({ base, secret });
    const worker = await startTestWorker(first, { executors: 2 });
    const id = await postBuild(first, { type: 'directory', project_directory: tempDir(), config: TEN_LINES });
    expect((await waitForBuild(first, id)).status).toBe('SUCCESS');

    const paths = [
      `/v1/build/${id}`, `/v1/build/${id}/subjob`, `/v1/build/${id}/subjob/1`, `/v1/build/${id}/subjob/1/atom`,
      `/v1/build/${id}/subjob/1/atom/0`, `/v1/build/${id}/subjob/1/atom/0/console?max_lines=3&offset_line=2`,
      `/v1/build/${id}/subjob/2/atom/0/console`, '/v1/build', '/v2/builds?limit=1',
    ];
    const before = new Map<string, unknown>();
    for (const path of paths) before.set(path, (await api(first, 'GET', path)).body);
    const archive = async (url: string, kind: string) => Buffer.from(await (await fetch(`${url}/v1/build/${id}/artifacts.${kind}`)).arrayBuffer());
    const tarBefore = await archive(first.url, 'tar.gz');
    const zipBefore = await archive(first.url, 'zip');
    const oldSession = first.server.sessionId;
    await worker.stop();
    await first.close();

    const second = await startTestMaster({ base, secret });
    expect(second.server.sessionId).toMatch(UUID);
    expect(second.server.sessionId).not.toBe(oldSession);
    const status = await api(second, 'GET', '/v1');
    expectSessionHeaders(status, second.server.sessionId);
    expectFailure(await api(second, 'GET', '/v1', { headers: { 'Expected-Session-Id': oldSession } }), 412);

    for (const path of paths) {
      const response = await api(second, 'GET', path);
      expect(response.status, path).toBe(200);
      expect(response.body, path).toEqual(before.get(path));
    }
    expect((await api(second, 'GET', `/v1/build/${id}/subjob/1/atom/0/console?max_lines=3&offset_line=2`)).body.content)
      .toBe('line_2\nline_3\nline_4\n');
    expect(await archive(second.url, 'tar.gz')).toEqual(tarBefore);
    expect(await archive(second.url, 'zip')).toEqual(zipBefore);

    const next = await api(second, 'POST', '/v1/build', { json: { type: 'directory', project_directory: tempDir(), config: TEN_LINES } });
    expect(next.status).toBe(202);
    expect(next.body.build_id).toBe(id + 1);
    expect(((await api(second, 'GET', '/v1/build')).body.builds as any[]).map((build) => build.id)).toEqual([id, id + 1]);
  });

  it('keeps a build that was waiting for a worker: queued on the new master, run once a worker comes', async () => {
    const base = tempDir('cr-master-');
    const secret = 'restart-secret-9876543210';
    const first = await startTestMaster({ base, secret });
    const id = await postBuild(first, { type: 'directory', project_directory: tempDir(), config: TEN_LINES });
    await waitForBuild(first, id, (b) => b.status === 'PREPARING' && b.num_atoms === 3);
    await first.close();

    const second = await startTestMaster({ base, secret });
    expect(((await api(second, 'GET', '/v1/queue')).body.queue as any[]).map((build) => build.id)).toEqual([id]);
    await startTestWorker(second, { executors: 2 });
    const build = await waitForBuild(second, id);
    expect(build).toMatchObject({ status: 'SUCCESS', num_atoms: 3, details: '3 of 3 subjobs are complete (100.0%).' });
    expect((await api(second, 'GET', `/v1/build/${id}/subjob/2/atom/0/console?max_lines=1`)).body.content).toBe('line_9\n');
    expect((await api(second, 'GET', '/v1/queue')).body.queue).toEqual([]);
  });
});
