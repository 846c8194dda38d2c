import { createServer as createHttpServer, type Server, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from '../shared/log.ts';
import type { Conf } from '../shared/conf.ts';
import { NonceCache, verifyRequest } from '../shared/auth.ts';
import { CLOSE_UNAUTHENTICATED, MAX_FRAME_BYTES, WORKER_CONNECT_PATH } from '../shared/protocol.ts';
import { openStore, type Store } from './store/index.ts';
import { BuildManager } from './builds/build-manager.ts';
import { GitCache } from '../shared/git.ts';
import { createResultsLayout } from './builds/results-layout.ts';
import { WorkerRegistry } from './workers/worker-registry.ts';
import { attachWorkerSession, startLivenessSweep, type SessionDeps } from './workers/worker-session.ts';
import { createMetrics } from './metrics.ts';
import { createApp } from './http/app.ts';
import { join } from 'node:path';

export type MasterConf = Pick<Conf,
  'secret' | 'baseDirectory' | 'port' | 'hostname' | 'database' | 'maxBodyBytes' | 'authenticateReads' | 'acceptLegacyDigest' |
  'heartbeatIntervalMs' | 'httpsCertFile' | 'httpsKeyFile' | 'killGraceMs' | 'atomizerTimeoutMs' | 'maxAtomizerOutputBytes' |
  'maxAtoms' | 'maxConsoleBytes' | 'maxArtifactBytes' | 'maxArtifactFiles' | 'maxConcurrentPreparations' | 'noWorkerTimeoutMs' |
  'allowLocalRepositories' | 'gitTimeoutMs'>;

export interface MasterServer {
  readonly port: number;
  readonly url: string;
  readonly sessionId: string;
  readonly store: Store;
  close(): Promise<void>;
}

/**
 * Assembles the master: SQLite store, build manager, worker registry, HTTP API and the workers' WebSocket
 * endpoint on the same port. Listens on `host` (all interfaces by default) and the configured port (0: any).
 */
export async function startMaster(options: { conf: MasterConf; log: Logger; version: string; host?: string }): Promise<MasterServer> {
  const { conf, log } = options;
  const sessionId = randomUUID();
  const store = openStore(conf.database);
  const metrics = createMetrics();
  const registry = new WorkerRegistry();
  const layout = createResultsLayout(join(conf.baseDirectory, 'results'));
  const git = new GitCache({ root: join(conf.baseDirectory, 'git-cache'), timeoutMs: conf.gitTimeoutMs, allowLocalRepositories: conf.allowLocalRepositories });
  const manager = new BuildManager({ store, settings: conf, log, registry, metrics, layout, git, checkoutsRoot: join(conf.baseDirectory, 'projects') });
  const app = createApp({
    store, manager, registry, layout, metrics, log, sessionId, version: options.version, secret: conf.secret,
    maxBodyBytes: conf.maxBodyBytes, authenticateReads: conf.authenticateReads, acceptLegacyDigest: conf.acceptLegacyDigest,
  });

  const server: Server = conf.httpsCertFile && conf.httpsKeyFile
    ? createHttpsServer({ cert: readFileSync(conf.httpsCertFile), key: readFileSync(conf.httpsKeyFile) }, app)
    : createHttpServer(app);
  // Slow or stalled clients must not hold sockets for ever.
  server.requestTimeout = 60_000;
  server.headersTimeout = 20_000;
  server.keepAliveTimeout = 5_000;

  const sessionDeps: SessionDeps = { registry, events: manager, workerStore: store.workers, log: log.child({ component: 'workers' }), masterSessionId: sessionId };
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  const nonces = new NonceCache();
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== WORKER_CONNECT_PATH && path !== WORKER_CONNECT_PATH.replace('worker', 'slave')) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    const verdict = verifyRequest({
      secret: conf.secret, method: 'GET', path: req.url ?? '', body: Buffer.alloc(0), headers: req.headers,
      acceptLegacyDigest: false, nonces,
    });
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      if (verdict !== 'ok') {
        log.warn({ remote: req.socket.remoteAddress, verdict }, 'worker connection refused: not authenticated');
        ws.close(CLOSE_UNAUTHENTICATED, 'not authenticated');
        return;
      }
      attachWorkerSession(ws, sessionDeps);
    });
  });
  const liveness = startLivenessSweep(sessionDeps, Math.max(100, Math.min(1000, conf.heartbeatIntervalMs / 2)));

  manager.start();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(conf.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : conf.port;
  const scheme = conf.httpsCertFile ? 'https' : 'http';
  log.info({ port, sessionId }, 'master listening');

  let closing: Promise<void> | null = null;
  return {
    port,
    url: `${scheme}://${options.host && options.host !== '0.0.0.0' ? options.host : '127.0.0.1'}:${port}`,
    sessionId,
    store,
    close() {
      closing ??= (async () => {
        liveness.close();
        registry.close();
        server.close();
        for (const client of wss.clients) client.terminate();
        wss.close();
        server.closeAllConnections();
        await manager.close().catch((error: unknown) => log.error({ err: error }, 'closing the build manager failed'));
        store.close();
      })();
      return closing;
    },
  };
}
