/**
 * A scripted worker for security tests: a raw WebSocket to the master's worker endpoint that sends exactly
 * what a test says (well-formed or not) and records what comes back. Unlike bench/sim-worker.ts it never
 * answers on its own, so a test can play a hostile or broken worker step by step.
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { NONCE_HEADER, signRequest } from '../../shared/auth.ts';
import { WORKER_CHALLENGE_HEADER, createNonce, registerProof } from '../../shared/worker-auth.ts';
import {
  encodeArtifactChunk, PROTOCOL_VERSION, WORKER_CONNECT_PATH, type ArtifactChunkHeader, type MasterMessage,
  type WorkerMessage,
} from '../../shared/protocol.ts';
import { eventually } from './cluster.ts';

export interface Closed {
  readonly code: number;
  readonly reason: string;
}

export interface ProtocolClient {
  readonly socket: WebSocket;
  /** Text frames received, parsed (or the raw text when not JSON). */
  readonly received: unknown[];
  /** Settles when the connection closes: with the close code, or 1006 when it was never open. */
  readonly closed: Promise<Closed>;
  /** Settles once the handshake is over: true when it opened, false when it was refused or failed. */
  readonly opened: Promise<boolean>;
  /** The HTTP status of a refused handshake (for instance 429), or null. */
  readonly refusedStatus: () => number | null;
  sendJson(message: WorkerMessage | Record<string, unknown>): void;
  sendRaw(data: string | Buffer, options?: { binary?: boolean }): void;
  sendArtifact(header: Omit<ArtifactChunkHeader, 'type'>, bytes: Buffer): void;
  /** Sends "register" and waits for "registered"; returns the worker id. */
  register(options?: { name?: string; executors?: number; acceptsQueuedSubjobs?: boolean }): Promise<number>;
  /** Waits for the first message of that type not yet taken, and takes it. */
  next<T extends MasterMessage['type']>(type: T, timeoutMs?: number): Promise<Extract<MasterMessage, { type: T }>>;
  close(): void;
}

export interface ConnectOptions {
  /** Signed with this secret; null sends no signature at all. */
  readonly secret: string | null;
  readonly path?: string;
  /** Headers to send instead of fresh signed ones (a replay). */
  readonly headers?: Record<string, string>;
}

const open = new Set<ProtocolClient>();

/** Closes every client a test opened; for afterEach. */
export function closeAllProtocolClients(): void {
  for (const client of open) client.close();
  open.clear();
}

export function connectProtocolClient(masterUrl: string, options: ConnectOptions): ProtocolClient {
  const path = options.path ?? WORKER_CONNECT_PATH;
  // Protocol 2: a fresh challenge unless the test sends its own headers with one (a replay).
  const headers: Record<string, string> = { [WORKER_CHALLENGE_HEADER]: createNonce(), ...(options.headers ?? (options.secret === null ? {} : signRequest(options.secret, 'GET', path))) };
  let masterNonce = '';
  const socket = new WebSocket(`${masterUrl.replace(/^http/, 'ws')}${path}`, { headers, perMessageDeflate: false });
  const received: unknown[] = [];
  const taken = new Set<number>();
  let refusedStatus: number | null = null;
  socket.on('unexpected-response', (_request, response) => {
    refusedStatus = response.statusCode ?? null;
    response.resume();
    socket.terminate();
  });
  socket.on('error', () => undefined);
  socket.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    try {
      const message = JSON.parse(text) as { type?: string; body?: string; master_nonce?: string };
      if (message.type === 'hello') masterNonce = message.master_nonce ?? '';
      // The master seals every frame after hello (shared/worker-auth.ts); tests read what is inside.
      received.push(message.type === 'sealed' && typeof message.body === 'string' ? JSON.parse(message.body) : message);
    } catch {
      received.push(text);
    }
  });
  const closed = new Promise<Closed>((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  const whenOpen = new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    void closed.then((how) => reject(new Error(`closed before open: ${how.code} ${how.reason}`)));
  });
  whenOpen.catch(() => undefined);

  const send = (data: string | Buffer, binary: boolean) => {
    void whenOpen.then(() => socket.send(data, { binary }), () => undefined);
  };

  const helloNonce = () => eventually('the master\'s hello', () => masterNonce || null, 10_000);

  const client: ProtocolClient = {
    socket,
    received,
    closed,
    opened: whenOpen.then(() => true, () => false),
    refusedStatus: () => refusedStatus,
    sendJson: (message) => send(JSON.stringify(message), false),
    sendRaw: (data, sendOptions) => send(data, sendOptions?.binary ?? Buffer.isBuffer(data)),
    sendArtifact: (header, bytes) => send(encodeArtifactChunk({ type: 'artifact_chunk', ...header }, bytes), true),
    async register(registerOptions = {}) {
      client.sendJson({
        type: 'register',
        protocol_version: PROTOCOL_VERSION,
        name: registerOptions.name ?? `scripted-${randomUUID().slice(0, 6)}`,
        num_executors: registerOptions.executors ?? 1,
        session_id: randomUUID(),
        // Long enough that a test never has to heartbeat.
        heartbeat_interval_ms: 60_000,
        heartbeat_failure_threshold: 3,
        resume: null,
        ...(registerOptions.acceptsQueuedSubjobs ? { accepts_queued_subjobs: true } : {}),
        proof: registerProof(options.secret ?? '', {
          challenge: headers[WORKER_CHALLENGE_HEADER] ?? '', upgradeNonce: headers[NONCE_HEADER] ?? '', masterNonce: await helloNonce(),
        }),
      });
      return (await client.next('registered')).worker_id;
    },
    async next(type, timeoutMs = 10_000) {
      return eventually(`a "${type}" message from the master`, () => {
        const index = received.findIndex((message, at) => !taken.has(at) && (message as { type?: string }).type === type);
        if (index < 0) return null;
        taken.add(index);
        return received[index] as Extract<MasterMessage, { type: typeof type }>;
      }, timeoutMs);
    },
    close() {
      socket.terminate();
      open.delete(client);
    },
  };
  open.add(client);
  return client;
}
