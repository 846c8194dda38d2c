/**
 * Fault suite: what the master says to a worker while their connection is cut (shorter than the lease window)
 * must still reach the worker once it is back and has resumed: a cancel (stop, tear down) and a drain.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { api, eventually, startTestMaster, waitForBuild } from '../support/cluster.ts';
import { cleanUpFaultsAfterEach, recordingTeardowns, startHeldBuild } from '../support/fault-cluster.ts';
import { workersOf } from '../support/build-results.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import {
  expectNoProcessesLeft, startFaultWorker, workerName,
} from '../support/fault-workers.ts';

cleanUpFaultsAfterEach();

/*
 * What the master says to a worker that is away (WorkerEntry.send drops it) must be said again when the
 * worker resumes: a teardown after a cancel, and a drain.
 */
describe('what the master says during a cut shorter than the lease window', () => {
  it('a cancel: back, the worker stops the build\'s atoms and tears the build down', async () => {
    const { master, project, worker, id, proxy: cutProxy } = await startHeldBuild({ role: 'proxied', atoms: 2, viaProxy: true, job: recordingTeardowns });
    const proxy = cutProxy!;

    proxy.refuse();
    proxy.cut();
    await eventually('the worker to try to reconnect', () => proxy.refusedCount > 0);
    expect((await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } })).status).toBe(200);
    expect((await waitForBuild(master, id)).status).toBe('CANCELED');
    proxy.accept();
    await eventually('the worker to reconnect', () => proxy.acceptedCount === 2);
    await expectNoProcessesLeft(worker.name);
    await eventually('the teardown of the canceled build', () => {
      try {
        return readFileSync(join(project, 'teardowns'), 'utf8') === `${worker.name}\n`;
      } catch {
        return false;
      }
    }, 4_000);
    await eventually('the worker to hold no build', async () =>
      (await workersOf(master)).find((listed) => listed.id === worker.id)?.current_build_ids.length === 0, 4_000);
  });

  it('a drain: back, the worker drains and exits 0', async () => {
    const master = await startTestMaster();
    const proxy = await startTcpProxy(master.url);
    const worker = await startFaultWorker(master, { name: workerName('proxied'), masterUrl: proxy.url });

    proxy.refuse();
    proxy.cut();
    await eventually('the worker to try to reconnect', () => proxy.refusedCount > 0);
    expect((await api(master, 'POST', `/v1/worker/${worker.id}/shutdown`)).status).toBe(200);
    proxy.accept();
    await eventually('the worker to reconnect', () => proxy.acceptedCount === 2);
    await eventually('the worker to exit', () => worker.process.child.exitCode !== null, 4_000);
    expect(worker.process.child.exitCode).toBe(0);
  });
});
