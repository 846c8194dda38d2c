/**
 * Security suite: the workers' WebSocket endpoint against hostile or broken clients. Unsigned, forged and
 * replayed handshakes, malformed and oversized frames, messages out of order, a connection that never
 * registers, and a flood of reconnects: each is refused with a clear close code or 429, and the master
 * stays responsive and goes on serving real workers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { signRequest } from '../../shared/auth.ts';
import {
  CLOSE_PROTOCOL_ERROR, CLOSE_UNAUTHENTICATED, MAX_FRAME_BYTES, WORKER_CONNECT_PATH,
} from '../../shared/protocol.ts';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { closeAllProtocolClients, connectProtocolClient, type ProtocolClient } from '../support/protocol-client.ts';
import { workersOf } from '../support/build-results.ts';

afterEach(async () => {
  closeAllProtocolClients();
  await cleanupAll();
});

/** The master still answers its API, and has no worker registered by the abuse. */
async function expectMasterUnharmed(master: TestMaster): Promise<void> {
  expect((await api(master, 'GET', '/')).status).toBe(200);
  expect((await workersOf(master)).filter((worker) => worker.is_alive)).toEqual([]);
}

/** The error message the master sent before closing, if any. */
function errorSent(client: ProtocolClient): string | undefined {
  const error = client.received.find((message) => (message as { type?: string }).type === 'error') as { message: string } | undefined;
  return error?.message;
}

describe('the worker endpoint refuses a handshake', () => {
  it.each([
    ['without a signature', { secret: null }],
    ['signed with another secret', { secret: 'not-the-masters-secret' }],
    ['signed for another path', { headers: signRequest('s3cret-for-tests', 'GET', '/v1/build') }],
    ['signed for another method', { headers: signRequest('s3cret-for-tests', 'POST', WORKER_CONNECT_PATH) }],
    ['with a digest that is not hex', { headers: { ...signRequest('s3cret-for-tests', 'GET', WORKER_CONNECT_PATH), 'clusterrunner-message-authentication-digest': 'zz'.repeat(64) } }],
    ['with a timestamp an hour old', { headers: { ...signRequest('s3cret-for-tests', 'GET', WORKER_CONNECT_PATH), 'clusterrunner-timestamp': String(Date.now() - 3_600_000) } }],
  ])('%s: closed as not authenticated, before any message is read', async (_label, how) => {
    const master = await startTestMaster({ secret: 's3cret-for-tests' });
    const client = connectProtocolClient(master.url, { secret: 's3cret-for-tests', ...how });
    client.sendJson({ type: 'heartbeat' });
    expect(await client.closed).toEqual({ code: CLOSE_UNAUTHENTICATED, reason: 'not authenticated' });
    await expectMasterUnharmed(master);
  });

  it('replayed: the same signed headers work once', async () => {
    const master = await startTestMaster();
    const headers = signRequest(master.secret, 'GET', WORKER_CONNECT_PATH);
    const first = connectProtocolClient(master.url, { secret: master.secret, headers });
    await first.register();
    const replay = connectProtocolClient(master.url, { secret: master.secret, headers });
    expect((await replay.closed).code).toBe(CLOSE_UNAUTHENTICATED);
  });

  it('on another path: 404, no WebSocket', async () => {
    const master = await startTestMaster();
    const client = connectProtocolClient(master.url, { secret: master.secret, path: '/v1/build' });
    await client.closed;
    expect(client.refusedStatus()).toBe(404);
  });
});

describe('the worker endpoint closes a connection that sends', () => {
  const huge = 'x'.repeat(300);
  const nested = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
  it.each<[string, string | Buffer, RegExp]>([
    ['text that is not JSON', 'hello', /not valid JSON/],
    ['an empty frame', '', /not valid JSON/],
    ['a JSON array', '[1,2]', /invalid message/],
    ['a message without a type', '{"name":"w"}', /invalid message/],
    ['an unknown type', '{"type":"become_master"}', /invalid message/],
    ['a heartbeat before register', '{"type":"heartbeat"}', /first message must be "register"/],
    ['a result before register', JSON.stringify({ type: 'atom_finished', lease_id: 'l', build_id: 1, subjob_id: 0, atom_id: 0, exit_code: 0, time_s: 0, stop_reason: null, has_artifacts: false }), /first message must be "register"/],
    ['register with a field missing', '{"type":"register","protocol_version":1}', /invalid message/],
    ['register with an unknown field', JSON.stringify({ type: 'register', protocol_version: 1, name: 'w', num_executors: 1, session_id: 's', heartbeat_interval_ms: 1000, heartbeat_failure_threshold: 3, resume: null, is_admin: true }), /invalid message/],
    ['register with a 300-character name', JSON.stringify({ type: 'register', protocol_version: 1, name: huge, num_executors: 1, session_id: 's', heartbeat_interval_ms: 1000, heartbeat_failure_threshold: 3, resume: null }), /invalid message at name/],
    ['register with 100,000 executors', JSON.stringify({ type: 'register', protocol_version: 1, name: 'w', num_executors: 100_000, session_id: 's', heartbeat_interval_ms: 1000, heartbeat_failure_threshold: 3, resume: null }), /invalid message at num_executors/],
    ['register with another protocol version', JSON.stringify({ type: 'register', protocol_version: 99, name: 'w', num_executors: 1, session_id: 's', heartbeat_interval_ms: 1000, heartbeat_failure_threshold: 3, resume: null, proof: '0'.repeat(64) }), /protocol version 99 is not supported/],
    ['JSON nested 100,000 deep', nested, /invalid message|not valid JSON/],
    ['a binary frame before register', Buffer.from([0, 0, 0, 2, 123, 125]), /binary frame before "register"/],
  ])('%s: an error message naming it, then close 4400', async (_label, frame, expected) => {
    const master = await startTestMaster();
    const client = connectProtocolClient(master.url, { secret: master.secret });
    client.sendRaw(frame);
    expect((await client.closed).code).toBe(CLOSE_PROTOCOL_ERROR);
    expect(errorSent(client)).toMatch(expected);
    await expectMasterUnharmed(master);
  });

  it.each<[string, (client: ProtocolClient) => void, RegExp]>([
    ['register twice', (client) => client.sendJson({ type: 'register', protocol_version: 1, name: 'again', num_executors: 1, session_id: 's', heartbeat_interval_ms: 1000, heartbeat_failure_threshold: 3, resume: null, proof: '0'.repeat(64) }), /already registered/],
    ['a binary frame shorter than its header', (client) => client.sendRaw(Buffer.from([0, 0]), { binary: true }), /invalid artifact frame/],
    ['a binary frame whose header length is out of range', (client) => client.sendRaw(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2]), { binary: true }), /invalid artifact frame/],
    ['a binary frame whose header is not an artifact chunk', (client) => {
      const head = Buffer.from('{"type":"artifact_chunk","lease_id":"x"}');
      const length = Buffer.alloc(4);
      length.writeUInt32BE(head.length);
      client.sendRaw(Buffer.concat([length, head]), { binary: true });
    }, /invalid artifact frame/],
  ])('after register, %s: an error message naming it, then close 4400', async (_label, act, expected) => {
    const master = await startTestMaster();
    const client = connectProtocolClient(master.url, { secret: master.secret });
    await client.register();
    act(client);
    expect((await client.closed).code).toBe(CLOSE_PROTOCOL_ERROR);
    expect(errorSent(client)).toMatch(expected);
    expect((await api(master, 'GET', '/')).status).toBe(200);
  });

  it('a frame over the 4 MiB limit: closed with 1009 before the master reads it all', async () => {
    const master = await startTestMaster();
    const client = connectProtocolClient(master.url, { secret: master.secret });
    await client.register();
    client.sendRaw(Buffer.alloc(MAX_FRAME_BYTES + 1), { binary: true });
    expect((await client.closed).code).toBe(1009);
    expect((await api(master, 'GET', '/')).status).toBe(200);
  });

  it('results for a lease it does not hold: each refused with abort_lease, nothing recorded', async () => {
    const master = await startTestMaster();
    const client = connectProtocolClient(master.url, { secret: master.secret });
    await client.register();
    const ids = { lease_id: 'made-up', build_id: 1, subjob_id: 0, atom_id: 0 };
    client.sendJson({ type: 'atom_started', ...ids });
    client.sendJson({ type: 'atom_finished', ...ids, exit_code: 0, time_s: 1, stop_reason: null, has_artifacts: false });
    expect(await client.next('abort_lease')).toEqual({ type: 'abort_lease', lease_id: 'made-up', reason: 'lease_lost' });
    expect(await client.next('abort_lease')).toEqual({ type: 'abort_lease', lease_id: 'made-up', reason: 'lease_lost' });
    expect((await api(master, 'GET', '/v1/build')).body.builds).toEqual([]);
  });

  it('nothing at all: closed once the time to register has passed', async () => {
    const master = await startTestMaster();
    const client = connectProtocolClient(master.url, { secret: master.secret });
    const closed = await client.closed;
    expect(closed.code).toBe(CLOSE_PROTOCOL_ERROR);
    expect(errorSent(client)).toMatch(/no "register" within \d+ ms/);
  });
});

describe('a flood of reconnects', () => {
  it('is refused with 429 over max_worker_connects_per_second; the API answers meanwhile, and real workers still get in', async () => {
    const master = await startTestMaster({ conf: { maxWorkerConnectsPerSecond: 10 } });
    const flood = Array.from({ length: 300 }, () => connectProtocolClient(master.url, { secret: master.secret }));
    const status = await api(master, 'GET', '/v1/queue');
    expect(status.status).toBe(200);
    const opened = await Promise.all(flood.map((client) => client.opened));
    const refused = flood.filter((client) => client.refusedStatus() === 429).length;
    const admitted = opened.filter(Boolean).length;
    process.stderr.write(`FIGURE flood admitted ${admitted} refused ${refused} of ${flood.length}\n`);
    // The window is one second: a flood straddling two windows gets in at most twice.
    expect(admitted).toBeLessThanOrEqual(20);
    expect(admitted + refused).toBe(flood.length);
    for (const client of flood) client.close();

    // A real worker refused by the flood's window retries on its backoff and gets in; a build runs.
    await startTestWorker(master, { executors: 1 });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir('cr-project-'),
      config: { commands: ['echo ok'], atomizers: [{ N: 'seq 1 2' }] },
    });
    const build = await waitForBuild(master, id);
    expect([build.status, build.error_message]).toEqual(['SUCCESS', null]);
  });
});
