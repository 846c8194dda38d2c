/**
 * A pool worker the master is stopping (replaced as down, reaped) that connects meanwhile — a frozen process
 * thawed, a network healed — is drained as it registers. Before, the pool drained it at its next tick, and a
 * dispatch pass in between could give it work it was about to be stopped from doing (pools.test.ts saw it
 * once in CI, as an ATOM_START on the stopped worker).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, postBuild, startTestMaster, tempDir } from '../support/cluster.ts';
import { closeAllProtocolClients, connectProtocolClient } from '../support/protocol-client.ts';

afterEach(async () => {
  closeAllProtocolClients();
  await cleanupAll();
});

const typesOf = (received: unknown[]) => received.map((message) => (message as { type?: string }).type);

describe('a pool worker being stopped that connects', () => {
  it('is told to drain as it registers, and is given no build, while another worker is', async () => {
    const master = await startTestMaster();
    await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: { commands: ['true'], atomizers: [{ N: 'seq 1 4' }] } });
    master.server.registry.beingStopped.add('pool-thawed');

    const thawed = connectProtocolClient(master.url, { secret: master.secret });
    await thawed.register({ name: 'pool-thawed', executors: 2 });
    await thawed.next('shutdown');
    const healthy = connectProtocolClient(master.url, { secret: master.secret });
    await healthy.register({ name: 'pool-healthy', executors: 2 });
    expect((await healthy.next('setup_build')).type).toBe('setup_build');

    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(typesOf(thawed.received)).not.toContain('setup_build');
    expect(typesOf(thawed.received)).not.toContain('run_subjob');
  });
});
