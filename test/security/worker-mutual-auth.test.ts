/**
 * Security suite, issue 10 item 2: the worker authenticates the master. A real worker is pointed at a fake
 * master (a real WebSocket server on loopback) that answers for the master's URL, as DNS, ARP or any on-path
 * position allows: without the secret it never gets a command run, and even with it, frames that are not
 * sealed, replayed or reordered are refused. A login captured by a fake master cannot be replayed to the
 * real one.
 */
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { NONCE_HEADER, signRequest } from '../../shared/auth.ts';
import { CLOSE_MASTER_UNAUTHENTICATED, CLOSE_UNAUTHENTICATED, PROTOCOL_VERSION, WORKER_CONNECT_PATH } from '../../shared/protocol.ts';
import { FrameSealer, WORKER_CHALLENGE_HEADER, createNonce, masterProof, type ConnectionBinding } from '../../shared/worker-auth.ts';
import { cleanupAll, eventually, startTestMaster, startTestWorker, tempDir } from '../support/cluster.ts';
import { closeAllProtocolClients, connectProtocolClient } from '../support/protocol-client.ts';

const SECRET = 'the-real-secret';

interface Connection {
  readonly request: IncomingMessage;
  readonly socket: WebSocket;
  readonly binding: (masterNonce: string) => ConnectionBinding;
  readonly received: unknown[];
  closeCode: number | null;
}

interface FakeMaster {
  readonly url: string;
  readonly connections: Connection[];
}

const servers: Server[] = [];

afterEach(async () => {
  closeAllProtocolClients();
  await cleanupAll();
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** Answers every worker upgrade without checking anything and plays `script` on the connection. */
async function startFakeMaster(script: (connection: Connection) => void): Promise<FakeMaster> {
  const server = createServer();
  const wss = new WebSocketServer({ server });
  const connections: Connection[] = [];
  wss.on('connection', (socket, request) => {
    const header = (name: string) => String(request.headers[name] ?? '');
    const connection: Connection = {
      request, socket, received: [], closeCode: null,
      binding: (masterNonce) => ({ challenge: header(WORKER_CHALLENGE_HEADER), upgradeNonce: header(NONCE_HEADER), masterNonce }),
    };
    connections.push(connection);
    socket.on('message', (data) => connection.received.push(JSON.parse(data.toString())));
    socket.on('close', (code) => {
      connection.closeCode = code;
    });
    script(connection);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  const address = server.address() as { port: number };
  return { url: `http://127.0.0.1:${address.port}`, connections };
}

/** Work that leaves a file behind if the worker ever runs it. */
function hostileWork(marker: string, projectDir: string): object[] {
  return [
    {
      type: 'setup_build', build_id: 1, project: { type: 'directory', path: projectDir }, snapshot_path: '/v1/build/1/project',
      remote_files: {}, setup_command: `touch ${marker}.setup`, teardown_command: null, command: `touch ${marker}.atom`,
      atom_timeout_ms: null, kill_grace_ms: 100, max_console_bytes: 1_000_000,
    },
    {
      type: 'run_subjob', lease_id: 'lease-1', build_id: 1, subjob_id: 0, executor_index: 0, build_executor_index: 0,
      atoms: [{ atom_id: 0, command_string: `touch ${marker}.atom`, env: {} }],
    },
  ];
}

function hello(secret: string, binding: ConnectionBinding): string {
  return JSON.stringify({ type: 'hello', protocol_version: PROTOCOL_VERSION, master_nonce: binding.masterNonce, proof: masterProof(secret, binding) });
}

/** Waits for `count` connections the worker closed as "master not authenticated", then checks nothing ran. */
async function expectRefusedWithoutRunning(fake: FakeMaster, marker: string, count: number): Promise<void> {
  await eventually(`${count} connections closed by the worker`, () => fake.connections.filter((c) => c.closeCode === CLOSE_MASTER_UNAUTHENTICATED).length >= count || null, 30_000);
  for (const connection of fake.connections) {
    expect(connection.received.filter((message) => (message as { type: string }).type === 'register')).toEqual([]);
  }
  expect(existsSync(`${marker}.setup`)).toBe(false);
  expect(existsSync(`${marker}.atom`)).toBe(false);
}

describe('a worker facing a fake master that does not hold the secret', () => {
  it.each<[string, (connection: Connection, work: object[]) => void]>([
    ['sends work without any hello (the old protocol)', (connection, work) => {
      for (const message of work) connection.socket.send(JSON.stringify(message));
    }],
    ['answers the challenge with another secret, then sends work', (connection, work) => {
      const binding = connection.binding(createNonce());
      connection.socket.send(hello('a-guessed-secret', binding));
      for (const message of work) connection.socket.send(JSON.stringify(message));
    }],
    ['replays an old hello, then sends work sealed under another secret', (connection, work) => {
      // A proof for another connection's challenge: what a fake master could have captured earlier.
      const binding = { ...connection.binding(createNonce()), challenge: createNonce() };
      connection.socket.send(hello(SECRET, binding));
      const sealer = new FrameSealer('a-guessed-secret', connection.binding(binding.masterNonce));
      for (const message of work) connection.socket.send(sealer.seal(JSON.stringify(message)));
    }],
  ])('%s: the worker closes, never registers and never runs a command', async (_label, play) => {
    const dir = tempDir('cr-fake-master-');
    const marker = join(dir, 'ran');
    const fake = await startFakeMaster((connection) => play(connection, hostileWork(marker, dir)));
    await startTestWorker({ url: fake.url, secret: SECRET });
    // Refused more than once: it keeps reconnecting (the real master may come back), never trusting.
    await expectRefusedWithoutRunning(fake, marker, 2);
  });
});

describe('a worker facing a master that holds the secret', () => {
  /** Proves itself, then sends the frames `frames(sealer)` returns. */
  async function provenMaster(frames: (seal: (message: object) => string) => string[]): Promise<FakeMaster> {
    return startFakeMaster((connection) => {
      const binding = connection.binding(createNonce());
      connection.socket.send(hello(SECRET, binding));
      const sealer = new FrameSealer(SECRET, binding);
      connection.socket.once('message', () => {
        connection.socket.send(sealer.seal(JSON.stringify({ type: 'registered', worker_id: 1, master_session_id: 'm', resumed_leases: [], received_output: [] })));
        for (const frame of frames((message) => sealer.seal(JSON.stringify(message)))) connection.socket.send(frame);
      });
    });
  }

  it('runs sealed work (the control case), and refuses the same frame replayed', async () => {
    const dir = tempDir('cr-fake-master-');
    const marker = join(dir, 'ran');
    const [setup] = hostileWork(marker, dir);
    const fake = await provenMaster((seal) => {
      const frame = seal(setup!);
      return [frame, frame];
    });
    await startTestWorker({ url: fake.url, secret: SECRET });
    await eventually('the sealed setup to run', () => existsSync(`${marker}.setup`) || null, 30_000);
    await eventually('the worker to close on the replay', () => fake.connections[0]!.closeCode === CLOSE_MASTER_UNAUTHENTICATED || null);
    expect(fake.connections[0]!.received.filter((message) => (message as { type: string }).type === 'register')).toHaveLength(1);
  });

  it.each<[string, (seal: (message: object) => string, work: object[]) => string[]]>([
    ['unsealed work after a valid hello', (_seal, work) => work.map((message) => JSON.stringify(message))],
    ['sealed work sent out of order', (seal, work) => {
      const [first, second] = work.map((message) => seal(message));
      return [second!, first!];
    }],
    ['sealed work with its body altered', (seal, work) => {
      const frame = JSON.parse(seal({ type: 'heartbeat_ack' })) as Record<string, unknown>;
      return [JSON.stringify({ ...frame, body: JSON.stringify(work[0]) })];
    }],
  ])('%s: refused, nothing runs', async (_label, frames) => {
    const dir = tempDir('cr-fake-master-');
    const marker = join(dir, 'ran');
    const fake = await provenMaster((seal) => frames(seal, hostileWork(marker, dir)));
    await startTestWorker({ url: fake.url, secret: SECRET });
    await eventually('the worker to close', () => fake.connections[0]?.closeCode === CLOSE_MASTER_UNAUTHENTICATED || null, 30_000);
    expect(existsSync(`${marker}.setup`)).toBe(false);
    expect(existsSync(`${marker}.atom`)).toBe(false);
  });
});

describe('a captured login', () => {
  it('replayed to the real master (its nonce cache emptied by a restart) is refused', async () => {
    // Someone on the path records a worker's upgrade headers and its register frame...
    const first = await startTestMaster({ secret: SECRET });
    const headers = { ...signRequest(SECRET, 'GET', WORKER_CONNECT_PATH), [WORKER_CHALLENGE_HEADER]: createNonce() };
    const worker = connectProtocolClient(first.url, { secret: SECRET, headers });
    const sent: string[] = [];
    const send = worker.socket.send.bind(worker.socket);
    worker.socket.send = ((data: string, ...rest: unknown[]) => {
      sent.push(data);
      (send as (data: string, ...more: unknown[]) => void)(data, ...rest);
    }) as WebSocket['send'];
    await worker.register({ name: 'captured' });
    worker.close();
    const registerFrame = sent.find((frame) => frame.includes('"register"'));
    expect(registerFrame).toBeDefined();

    // ...and replays both, within the signature window, to a master that has not seen the upgrade's nonce.
    const restarted = await startTestMaster({ secret: SECRET });
    const replay = connectProtocolClient(restarted.url, { secret: null, headers });
    replay.sendRaw(registerFrame!);
    expect((await replay.closed).code).toBe(CLOSE_UNAUTHENTICATED);
    expect(replay.received.some((message) => (message as { type: string }).type === 'registered')).toBe(false);
  });
});
