import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import type { Logger } from '../shared/log.ts';
import type { Conf } from '../shared/conf.ts';
import { openStore, type Store } from './store/index.ts';
import { createNonceStore } from './store/nonce-store.ts';
import { BuildManager } from './builds/build-manager.ts';
import { GitCache } from '../shared/git.ts';
import { createResultsLayout } from './builds/results-layout.ts';
import { WorkerRegistry } from './workers/worker-registry.ts';
import { startLivenessSweep, type SessionDeps } from './workers/worker-session.ts';
import { attachWorkerEndpoint } from './workers/worker-endpoint.ts';
import { createMetrics } from './metrics.ts';
import { createApp } from './http/app.ts';
import { guardConnections } from './http/connection-guard.ts';
import { Pruner } from './maintenance/pruner.ts';
import { startLogRotation } from '../shared/log.ts';
import { startPools, type PoolsHandle } from './pools/start-pools.ts';
import { warmJobOverheads } from './estimates/estimates.ts';

/** confFile and pools: the master's pools (SPEC §13) start local workers with its conf file. */
export type MasterConf = Partial<Pick<Conf, 'confFile' | 'pools' | 'suspectAfterFailures'>> & Pick<Conf,
  'secret' | 'baseDirectory' | 'port' | 'hostname' | 'database' | 'maxBodyBytes' | 'authenticateReads' | 'acceptLegacyDigest' |
  'heartbeatIntervalMs' | 'httpsCertFile' | 'httpsKeyFile' | 'killGraceMs' | 'atomizerTimeoutMs' | 'maxAtomizerOutputBytes' |
  'maxAtoms' | 'maxConsoleBytes' | 'maxArtifactBytes' | 'maxArtifactFiles' | 'maxConcurrentPreparations' | 'noWorkerTimeoutMs' |
  'keepBuildsMs' | 'maxResultsBytes' | 'logMaxBytes' | 'logKeepFiles' |
  'allowLocalRepositories' | 'gitTimeoutMs' | 'httpRequestTimeoutMs' | 'httpHeadersTimeoutMs' | 'maxWorkerConnectsPerSecond' | 'compatibility' |
  'httpSendTimeoutMs' | 'maxConnections' | 'maxConnectionsPerAddress'>;

/**
 * The database holds git and remote_files credentials, the master's folders every build's project and output:
 * they are the master's user's only (issue 10 item 9). The folders at 0700 close everything under them,
 * whatever mode a file inside was made with; the database file (and its WAL and shared-memory files) at 0600.
 * base_directory itself is made 0700 when the master creates it, and otherwise left as it is: a worker
 * sharing it may have opened it for traversal by run_as_user.
 */
function restrictFileModes(conf: Pick<Conf, 'baseDirectory' | 'database'>): void {
  mkdirSync(conf.baseDirectory, { recursive: true, mode: 0o700 });
  for (const folder of MASTER_FOLDERS) {
    const path = join(conf.baseDirectory, folder);
    mkdirSync(path, { recursive: true, mode: 0o700 });
    chmodSync(path, 0o700);
  }
  if (conf.database === ':memory:') return;
  // Made here, empty, so it is never readable by others even for a moment; SQLite gives its WAL and
  // shared-memory files the database file's mode.
  mkdirSync(dirname(conf.database), { recursive: true });
  closeSync(openSync(conf.database, 'a', 0o600));
  for (const file of [conf.database, `${conf.database}-wal`, `${conf.database}-shm`]) {
    if (existsSync(file)) chmodSync(file, 0o600);
  }
}
const MASTER_FOLDERS = ['results', 'projects', 'git-cache'];

export interface MasterServer {
  readonly port: number;
  readonly url: string;
  readonly sessionId: string;
  readonly store: Store;
  /** The workers connected (and those the pools are stopping), for an embedding process and tests. */
  readonly registry: WorkerRegistry;
  close(): Promise<void>;
}

/** Old space may grow by this much past what survived the last full collection before the next one. */
const HEAP_GROWING_PERCENT = 40;

/**
 * Assembles the master: SQLite store, build manager, worker registry, HTTP API and the workers' WebSocket
 * endpoint on the same port. Listens on `host` (all interfaces by default) and the configured port (0: any).
 */
export async function startMaster(options: { conf: MasterConf; log: Logger; version: string; host?: string }): Promise<MasterServer> {
  const { conf, log } = options;
  // The master's live heap is small (about 50 MB with 100,000 atoms in flight) but it allocates fast, and V8's
  // default growth let garbage take its RSS to 370 MB before collecting (issue 18 bounds it at 300 MB).
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  const sessionId = randomUUID();
  restrictFileModes(conf);
  const store = openStore(conf.database);
  const metrics = createMetrics();
  const registry = new WorkerRegistry();
  const layout = createResultsLayout(join(conf.baseDirectory, 'results'));
  const git = new GitCache({ root: join(conf.baseDirectory, 'git-cache'), timeoutMs: conf.gitTimeoutMs, allowLocalRepositories: conf.allowLocalRepositories });
  // Bound once the worker endpoint is up (it needs the manager's events).
  let isIngestBusy = () => false;
  const manager = new BuildManager({
    store, settings: conf, log, registry, metrics, layout, git, checkoutsRoot: join(conf.baseDirectory, 'projects'), isBusy: () => isIngestBusy(),
    // The job's next ETA then finds its overheads learned, not learned inside a status read.
    buildEnded: (job) => {
      warmJobOverheads(store, job.name, job.timingKey).catch((error: unknown) => log.debug({ job: job.name, err: error }, 'learning the job\'s overheads failed'));
    },
  });
  const pools: PoolsHandle = { current: null };
  const app = createApp({
    store, manager, registry, layout, metrics, log, sessionId, version: options.version, secret: conf.secret,
    maxBodyBytes: conf.maxBodyBytes, authenticateReads: conf.authenticateReads, acceptLegacyDigest: conf.acceptLegacyDigest,
    compatibility: conf.compatibility, nonces: createNonceStore(store.db), pools,
  });

  // Slow or stalled clients must not hold sockets for ever. Node checks these timeouts only every
  // connectionsCheckingInterval (30 s by default), which would let a short limit run far over.
  const timeouts = {
    requestTimeout: conf.httpRequestTimeoutMs,
    headersTimeout: Math.min(conf.httpHeadersTimeoutMs, conf.httpRequestTimeoutMs),
    keepAliveTimeout: 5_000,
    connectionsCheckingInterval: Math.max(100, Math.min(30_000, Math.floor(conf.httpHeadersTimeoutMs / 4))),
  };
  const server: Server = conf.httpsCertFile && conf.httpsKeyFile
    ? createHttpsServer({ ...timeouts, cert: readFileSync(conf.httpsCertFile), key: readFileSync(conf.httpsKeyFile) }, app)
    : createHttpServer(timeouts, app);
  guardConnections(server, {
    maxConnections: conf.maxConnections, maxPerAddress: conf.maxConnectionsPerAddress, idleMs: conf.httpSendTimeoutMs, closeGraceMs: 2_000,
  }, log);

  const sessionDeps: SessionDeps = { registry, events: manager, workerStore: store.workers, log: log.child({ component: 'workers' }), masterSessionId: sessionId,
    registerTimeoutMs: Math.max(5_000, 3 * conf.heartbeatIntervalMs),
  };
  const endpoint = attachWorkerEndpoint(server, { secret: conf.secret, maxConnectsPerSecond: conf.maxWorkerConnectsPerSecond, log, session: sessionDeps });
  isIngestBusy = endpoint.isBusy;
  const liveness = startLivenessSweep(sessionDeps, Math.max(100, Math.min(1000, conf.heartbeatIntervalMs / 2)));

  manager.start();
  const pruner = new Pruner({
    db: store.db, resultsRoot: join(conf.baseDirectory, 'results'), checkoutsRoot: join(conf.baseDirectory, 'projects'),
    keepBuildsMs: conf.keepBuildsMs, maxResultsBytes: conf.maxResultsBytes,
    log: log.child({ component: 'pruner' }), gauges: metrics,
  });
  pruner.start();
  const logRotation = startLogRotation({ maxBytes: conf.logMaxBytes, keepFiles: conf.logKeepFiles, log });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(conf.port, options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    // A port in use (or refused): what started goes again, or its timers and the checkpoint thread would
    // keep the process alive, and local mode would wait for a master that will never answer.
    liveness.close();
    await pruner.close();
    logRotation.close();
    registry.close();
    endpoint.close();
    await manager.close().catch(() => undefined);
    store.close();
    throw error;
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : conf.port;
  const scheme = conf.httpsCertFile ? 'https' : 'http';
  log.info({ port, sessionId }, 'master listening');
  pools.current = startPools({ conf, log, store, registry, metrics, events: store.events, demand: () => manager.executorDemand(), url: `${scheme}://127.0.0.1:${port}`, hostUrl: `${scheme}://${options.host && options.host !== '0.0.0.0' ? options.host : conf.hostname}:${port}` });

  let closing: Promise<void> | null = null;
  return {
    port,
    url: `${scheme}://${options.host && options.host !== '0.0.0.0' ? options.host : '127.0.0.1'}:${port}`,
    sessionId,
    store,
    registry,
    close() {
      closing ??= (async () => {
        liveness.close();
        await pools.current?.close();
        await pruner.close();
        logRotation.close();
        registry.close();
        server.close();
        endpoint.close();
        server.closeAllConnections();
        await manager.close().catch((error: unknown) => log.error({ err: error }, 'closing the build manager failed'));
        store.close();
      })();
      return closing;
    },
  };
}
