import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { sealOutgoingFrames } from '../../master/workers/worker-endpoint.ts';
import { FrameOpener, FrameSealer, createNonce, type ConnectionBinding } from '../../shared/worker-auth.ts';

const binding: ConnectionBinding = { challenge: createNonce(), upgradeNonce: 'an-upgrade-nonce', masterNonce: createNonce() };

let server: Server | null = null;
const sockets: Duplex[] = [];
afterEach(async () => {
  // An upgraded socket is no longer the server's to close: closeAllConnections would miss it after a failure.
  for (const socket of sockets.splice(0)) socket.destroy();
  await new Promise((done) => server?.close(done) ?? done(undefined));
  server = null;
});

/** A real WebSocket pair on 127.0.0.1; the master's side sealed as the worker endpoint seals it, its raw socket's writes counted. */
async function connectedPair(): Promise<{ master: WebSocket; worker: WebSocket; writes: () => number }> {
  const wss = new WebSocketServer({ noServer: true });
  server = createServer();
  let writes = 0;
  const accepted = new Promise<WebSocket>((resolve) => {
    server!.on('upgrade', (req, socket: Duplex, head) => {
      sockets.push(socket);
      // Every call that reaches the kernel (one write or one writev) is counted.
      const raw = socket as Duplex & { _write: Duplex['_write']; _writev?: Duplex['_writev'] };
      const write = raw._write.bind(raw);
      raw._write = (chunk, encoding, callback) => { writes++; write(chunk, encoding, callback); };
      const writev = raw._writev?.bind(raw);
      if (writev) raw._writev = (chunks, callback) => { writes++; writev(chunks, callback); };
      wss.handleUpgrade(req, socket, head, (ws) => {
        sealOutgoingFrames(ws, socket, new FrameSealer('s3cret', binding));
        resolve(ws);
      });
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const worker = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  const master = await accepted;
  await new Promise((resolve) => worker.once('open', resolve));
  return { master, worker, writes: () => writes };
}

function receive(worker: WebSocket, count: number): Promise<string[]> {
  const opener = new FrameOpener('s3cret', binding);
  const bodies: string[] = [];
  return new Promise((resolve, reject) => {
    worker.on('message', (data) => {
      const opened = opener.open(String(data));
      if (!opened.ok) reject(new Error(opened.error));
      else bodies.push(opened.body);
      if (bodies.length === count) resolve(bodies);
    });
  });
}

describe('frames the master sends a worker', () => {
  it('sent in one turn of the loop, leave in one write, sealed and in order', async () => {
    const { master, worker, writes } = await connectedPair();
    const received = receive(worker, 51);
    const before = writes();
    const bodies = Array.from({ length: 50 }, (_, index) => JSON.stringify({ type: 'run_subjob', index }));
    for (const body of bodies) master.send(body);
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes() - before).toBe(1);
    // A frame alone in its turn still leaves at the turn's end: nothing waits for a later send.
    await new Promise((resolve) => setTimeout(resolve, 20));
    master.send('{"type":"heartbeat_ack"}');
    expect(await received).toEqual([...bodies, '{"type":"heartbeat_ack"}']);
    worker.close();
  });

  it('a frame sent as the connection closes is not left corked', async () => {
    const { master, worker } = await connectedPair();
    const received = receive(worker, 1);
    master.send('{"type":"shutdown"}');
    master.close(1000, 'bye');
    expect(await received).toEqual(['{"type":"shutdown"}']);
    await new Promise((resolve) => worker.once('close', resolve));
  });
});
