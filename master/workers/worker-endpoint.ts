import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { WebSocketServer, type WebSocket } from 'ws';
import { NONCE_HEADER, NonceCache, verifyRequest } from '../../shared/auth.ts';
import type { Logger } from '../../shared/log.ts';
import {
  CLOSE_PROTOCOL_ERROR, CLOSE_UNAUTHENTICATED, MAX_FRAME_BYTES, PROTOCOL_VERSION, WORKER_CONNECT_PATH, type HelloMessage,
} from '../../shared/protocol.ts';
import {
  FrameSealer, WORKER_CHALLENGE_HEADER, createNonce, isNonce, isRegisterProofValid, masterProof, type ConnectionBinding,
} from '../../shared/worker-auth.ts';
import { attachWorkerSession, type SessionDeps } from './worker-session.ts';
import { IngestQueue } from './ingest-queue.ts';

const CONNECT_PATHS = new Set([WORKER_CONNECT_PATH, WORKER_CONNECT_PATH.replace('worker', 'slave')]);

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Every text frame the master sends after `hello` goes out sealed. Both senders (the session's replies and
 * WorkerEntry.send for work) write through the socket's `send`, so sealing it here covers every frame that
 * runs something, and no caller can forget. The master sends no binary frames. The same wrapper writes the
 * frames of one turn of the loop to the socket at once, at the turn's end.
 */
export function sealOutgoingFrames(ws: WebSocket, raw: Duplex, sealer: FrameSealer): void {
  const send = ws.send.bind(ws);
  let isCorked = false;
  ws.send = ((data: unknown, ...rest: unknown[]) => {
    if (typeof data !== 'string') throw new Error('the master sends workers text frames only');
    // The frames of one turn of the loop leave in one write: each write is a system call (about 17 µs here),
    // and a turn that takes in several results of a worker hands it as many subjobs.
    if (!isCorked && raw.writable) {
      isCorked = true;
      raw.cork();
      setImmediate(() => {
        isCorked = false;
        raw.uncork();
      });
    }
    (send as (data: string, ...more: unknown[]) => void)(sealer.seal(data), ...rest);
  }) as WebSocket['send'];
}

export interface WorkerEndpointOptions {
  readonly secret: string;
  /** Upgrade attempts accepted per second from one address; the rest are answered 429 before any work. */
  readonly maxConnectsPerSecond: number;
  readonly log: Logger;
  readonly session: SessionDeps;
}

/**
 * The workers' WebSocket endpoint on the API's port. Attempts are rate-limited per address before the
 * signature is even checked, so a reconnect flood (a buggy worker fleet, or someone hostile) costs the
 * master a counter and a 429 each, and the API stays responsive.
 */
export function attachWorkerEndpoint(server: Server, options: WorkerEndpointOptions): { isBusy(): boolean; close(): void } {
  const { log } = options;
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  const nonces = new NonceCache();
  const ingest = new IngestQueue((error) => log.error({ err: error }, 'handling a worker message failed'));
  const limiter = new RateLimiterMemory({ points: options.maxConnectsPerSecond, duration: 1 });
  let refusedSinceLog = 0;

  const refuse = (socket: Duplex, status: string, extraHeaders = '') => {
    socket.end(`HTTP/1.1 ${status}\r\n${extraHeaders}Connection: close\r\nContent-Length: 0\r\n\r\n`);
  };

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => undefined);
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (!CONNECT_PATHS.has(path)) {
      refuse(socket, '404 Not Found');
      return;
    }
    const address = req.socket.remoteAddress ?? 'unknown';
    limiter.consume(address).then(
      () => upgrade(req, socket, head),
      (rejection: unknown) => {
        if (!(rejection instanceof RateLimiterRes)) {
          log.error({ err: rejection }, 'the worker connection rate limiter failed');
          refuse(socket, '503 Service Unavailable');
          return;
        }
        // One log line per burst, not one per refused attempt: the log must not become the flood.
        if (refusedSinceLog++ === 0) log.warn({ remote: address }, 'worker connection attempts over max_worker_connects_per_second; refusing with 429');
        refuse(socket, '429 Too Many Requests', `Retry-After: ${Math.max(1, Math.ceil(rejection.msBeforeNext / 1000))}\r\n`);
      },
    );
  });

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (socket.destroyed) return;
    if (refusedSinceLog > 0) {
      log.info({ refused: refusedSinceLog }, 'worker connection attempts were refused for going over the rate limit');
      refusedSinceLog = 0;
    }
    const verdict = verifyRequest({
      secret: options.secret, method: 'GET', path: req.url ?? '', body: Buffer.alloc(0), headers: req.headers,
      acceptLegacyDigest: false, nonces,
    });
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      if (verdict !== 'ok') {
        log.warn({ remote: req.socket.remoteAddress, verdict }, 'worker connection refused: not authenticated');
        ws.close(CLOSE_UNAUTHENTICATED, 'not authenticated');
        return;
      }
      const challenge = headerOf(req, WORKER_CHALLENGE_HEADER);
      if (!isNonce(challenge)) {
        const reason = `no worker challenge: this master speaks protocol version ${PROTOCOL_VERSION}; upgrade the worker`;
        log.warn({ remote: req.socket.remoteAddress }, 'worker connection refused: no challenge (a worker older than this master)');
        ws.send(JSON.stringify({ type: 'error', code: 'PROTOCOL_ERROR', message: reason }));
        ws.close(CLOSE_PROTOCOL_ERROR, reason.slice(0, 120));
        return;
      }
      const binding: ConnectionBinding = { challenge, upgradeNonce: headerOf(req, NONCE_HEADER) ?? '', masterNonce: createNonce() };
      ws.send(JSON.stringify({
        type: 'hello', protocol_version: PROTOCOL_VERSION, master_nonce: binding.masterNonce, proof: masterProof(options.secret, binding),
      } satisfies HelloMessage));
      sealOutgoingFrames(ws, socket, new FrameSealer(options.secret, binding));
      attachWorkerSession(ws, options.session, ingest, (proof) => isRegisterProofValid(options.secret, binding, proof));
    });
  };

  return {
    /** Worker messages wait to be handled: background work (the archives of running builds) waits for them. */
    isBusy: () => ingest.length > 0,
    close() {
      ingest.close();
      for (const client of wss.clients) client.terminate();
      wss.close();
    },
  };
}
