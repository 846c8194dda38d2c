/**
 * Nothing lost (found by the chaos soak in pool mode): a master killed right after handing out an atom may
 * come back with the lease but no record that the atom started. The worker then resends the atom's output
 * from its first byte; without a start the master had no console to put it in and stored an empty one. A
 * real worker faces a master (a WebSocket server holding the secret) that drops the connection after the
 * atom starts, then takes the worker back with the lease but no atom listed: the worker must start the atom
 * again there, before its output.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { cleanupAll, eventually, startTestWorker, tempDir } from '../support/cluster.ts';
import { closeScriptedMasters, startScriptedMaster, type ScriptedConnection } from '../support/scripted-master.ts';

const SECRET = 'a-master-secret';

afterEach(async () => {
  await cleanupAll();
  await closeScriptedMasters();
});

it('starts an atom again on a master that lost its start, before resending its output', async () => {
  const dir = tempDir('cr-unrecorded-');
  const gate = join(dir, 'gate');
  const work = [
    {
      type: 'setup_build', build_id: 1, project: { type: 'directory', path: dir }, snapshot_path: '/v1/build/1/project',
      remote_files: {}, setup_command: null, teardown_command: null, command: `echo first; while [ ! -e ${gate} ]; do sleep 0.05; done; echo second`,
      atom_timeout_ms: null, kill_grace_ms: 100, max_console_bytes: 1_000_000,
    },
    {
      type: 'run_subjob', lease_id: 'lease-1', build_id: 1, subjob_id: 0, executor_index: 0, build_executor_index: 0,
      atoms: [{ atom_id: 0, command_string: 'export N="1";', env: { N: '1' } }],
    },
  ];
  const connections: ScriptedConnection[] = [];
  const url = await startScriptedMaster(SECRET, (connection, message) => {
    if (connection.index === connections.length) connections.push(connection);
    const isFirst = connection.index === 0;
    if (isFirst && message.type === 'setup_finished') connection.send(work[1]!);
    if (message.type !== 'register') return;
    if (isFirst) {
      connection.send({ type: 'registered', worker_id: 1, master_session_id: 'm', resumed_leases: [], received_output: [] });
      connection.send(work[0]!);
    } else {
      // The lease came back from SQLite, the atom's start did not: no atom is listed as holding output.
      connection.send({ type: 'registered', worker_id: 1, master_session_id: 'm', resumed_leases: ['lease-1'], received_output: [] });
    }
  });

  await startTestWorker({ url, secret: SECRET }, { executors: 1, heartbeatFailureThreshold: 50 });
  await eventually('the atom started and printed', () => {
    const received = connections[0]?.received ?? [];
    return received.some((m) => m.type === 'atom_started') && received.some((m) => m.type === 'atom_output' && m.data?.includes('first')) ? true : null;
  }, 30_000);
  // The master dies: the connection drops without a word.
  connections[0]!.socket.terminate();
  await eventually('the worker back on a second connection', () => connections[1]?.received.some((m) => m.type === 'register') || null, 30_000);
  writeFileSync(gate, '');
  await eventually('the atom to finish', () => connections[1]!.received.some((m) => m.type === 'atom_finished') || null, 30_000);

  const after = connections[1]!.received.filter((m) => m.atom_id === 0).map((m) => m.type);
  expect(after[0]).toBe('atom_started');
  expect(after.filter((type) => type === 'atom_started')).toHaveLength(1);
  expect(after.at(-1)).toBe('atom_finished');
  const output = connections[1]!.received.filter((m) => m.type === 'atom_output').map((m) => m.data).join('');
  expect(output).toContain('first');
  expect(output).toContain('second');
});
