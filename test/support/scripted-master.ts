/**
 * A master played by a test: a WebSocket server holding the secret that completes the worker handshake (hello,
 * sealed frames) and then lets the test answer each message as it likes — for worker behaviour a real master
 * would only show by chance (a dropped connection at a given moment, a message sent before another arrives).
 */
import { createServer, type Server } from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import { NONCE_HEADER } from '../../shared/auth.ts';
import { PROTOCOL_VERSION } from '../../shared/protocol.ts';
import { FrameSealer, WORKER_CHALLENGE_HEADER, createNonce, masterProof } from '../../shared/worker-auth.ts';

export interface ScriptedMessage {
  readonly type: string;
  readonly atom_id?: number;
  readonly data?: string;
}

export interface ScriptedConnection {
  readonly socket: WebSocket;
  /** Which connection of the worker this is, from 0. */
  readonly index: number;
  readonly received: ScriptedMessage[];
  /** Sends a message sealed as the master seals every frame after hello. */
  send(message: object): void;
}

const servers: Server[] = [];

/** Starts the server; onMessage sees each message a worker sends, after it is recorded. Returns the master URL. */
export async function startScriptedMaster(secret: string, onMessage: (connection: ScriptedConnection, message: ScriptedMessage) => void): Promise<string> {
  const server = createServer();
  const wss = new WebSocketServer({ server });
  let connections = 0;
  wss.on('connection', (socket, request) => {
    const header = (name: string) => String(request.headers[name] ?? '');
    const binding = { challenge: header(WORKER_CHALLENGE_HEADER), upgradeNonce: header(NONCE_HEADER), masterNonce: createNonce() };
    const sealer = new FrameSealer(secret, binding);
    const connection: ScriptedConnection = {
      socket, index: connections++, received: [], send: (message) => socket.send(sealer.seal(JSON.stringify(message))),
    };
    socket.send(JSON.stringify({ type: 'hello', protocol_version: PROTOCOL_VERSION, master_nonce: binding.masterNonce, proof: masterProof(secret, binding) }));
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString()) as ScriptedMessage;
      connection.received.push(message);
      onMessage(connection, message);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

/** For afterEach. */
export async function closeScriptedMasters(): Promise<void> {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}
