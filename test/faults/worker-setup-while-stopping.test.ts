/**
 * A worker that is draining takes no new build (found by the 600 s soak): drained during a master outage, it
 * reconnected, and the master — not yet told of the drain — sent it a new build's setup while the worker was
 * already tearing its builds down on the way out. The setup ran and was never torn down. A real worker faces a
 * master (a WebSocket server holding the secret) that sends that setup while the last teardown runs.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { cleanupAll, eventually, startTestWorker, tempDir } from '../support/cluster.ts';
import { closeScriptedMasters, startScriptedMaster, type ScriptedConnection } from '../support/scripted-master.ts';

const SECRET = 'a-master-secret';

afterEach(async () => {
  await cleanupAll();
  await closeScriptedMasters();
});

function setupBuild(buildId: number, dir: string, setup: string | null, teardown: string): Record<string, unknown> {
  return {
    type: 'setup_build', build_id: buildId, project: { type: 'directory', path: dir }, snapshot_path: `/v1/build/${buildId}/project`,
    remote_files: {}, setup_command: setup, teardown_command: teardown, command: `while [ ! -e ${join(dir, 'atom-gate')} ]; do sleep 0.05; done`,
    atom_timeout_ms: null, kill_grace_ms: 100, max_console_bytes: 1_000_000,
  };
}

it('does not set up a build it is sent while draining, so nothing is left without its teardown', async () => {
  const dir = tempDir('cr-stopping-');
  const log = join(dir, 'log');
  const lines = () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter((line) => line !== '') : []);
  const connections: ScriptedConnection[] = [];
  const received = () => connections[0]?.received.map((message) => message.type) ?? [];
  const url = await startScriptedMaster(SECRET, (connection, message) => {
    if (connections.length === 0) connections.push(connection);
    if (message.type === 'register') {
      connection.send({ type: 'registered', worker_id: 1, master_session_id: 'm', resumed_leases: [], received_output: [] });
      // Build 1's teardown holds the worker on its way out until the test lets it go.
      connection.send(setupBuild(1, dir, null, `echo teardown-1 >> ${log}; while [ ! -e ${join(dir, 'teardown-gate')} ]; do sleep 0.05; done`));
    }
    if (message.type === 'setup_finished' && received().filter((type) => type === 'setup_finished').length === 1) {
      connection.send({
        type: 'run_subjob', lease_id: 'lease-1', build_id: 1, subjob_id: 0, executor_index: 0, build_executor_index: 0,
        atoms: [{ atom_id: 0, command_string: 'export N="1";', env: { N: '1' } }],
      });
    }
  });

  const worker = await startTestWorker({ url, secret: SECRET }, { executors: 2, heartbeatFailureThreshold: 50 });
  await eventually('the atom to start', () => received().includes('atom_started') || null, 30_000);
  worker.daemon.drain();
  writeFileSync(join(dir, 'atom-gate'), '');
  await eventually('build 1\'s teardown to run', () => lines().includes('teardown-1') || null, 30_000);

  // The master has not heard of the drain yet: it sends a new build to the executor that looks free.
  connections[0]!.send(setupBuild(2, dir, `echo setup-2 >> ${log}`, `echo teardown-2 >> ${log}`));
  await new Promise((resolve) => setTimeout(resolve, 500));
  writeFileSync(join(dir, 'teardown-gate'), '');
  expect(await worker.daemon.exited).toBe(0);
  expect(lines()).toEqual(['teardown-1']);
});
