import type { WebSocket, RawData } from 'ws';
import type { Logger } from '../../shared/log.ts';
import {
  CLOSE_PROTOCOL_ERROR, CLOSE_REPLACED, CLOSE_UNAUTHENTICATED, PROTOCOL_VERSION, decodeArtifactChunk, parseFrame, workerMessage,
  type HeartbeatMessage, type MasterMessage, type RegisterMessage,
} from '../../shared/protocol.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { WorkerStore } from '../store/worker-store.ts';
import type { WorkerEvents } from './worker-events.ts';
import { WorkerEntry, type Lease, type WorkerRegistry } from './worker-registry.ts';
import type { IngestQueue } from './ingest-queue.ts';

export interface SessionDeps {
  readonly registry: WorkerRegistry;
  readonly events: WorkerEvents;
  readonly workerStore: WorkerStore;
  readonly log: Logger;
  readonly masterSessionId: string;
  /** An authenticated connection that has not sent "register" within this is closed. */
  readonly registerTimeoutMs: number;
}

function sendTo(socket: WebSocket, message: MasterMessage): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message));
}

/** Per started atom of the resumed leases, the console bytes this master holds (SPEC: no output lost). */
function receivedOutput(worker: WorkerEntry, leaseIds: readonly string[]): { lease_id: string; atom_id: number; bytes: number }[] {
  const received: { lease_id: string; atom_id: number; bytes: number }[] = [];
  for (const leaseId of leaseIds) {
    for (const [atomId, bytes] of worker.leases.get(leaseId)?.outputBytes ?? []) received.push({ lease_id: leaseId, atom_id: atomId, bytes });
  }
  return received;
}

/** The worker is gone for good: its leases are given back (once). */
export function markWorkerLost(worker: WorkerEntry, deps: SessionDeps, reason: string): void {
  if (!worker.isAlive || deps.registry.isClosed) return;
  worker.isAlive = false;
  if (worker.disconnectTimer) clearTimeout(worker.disconnectTimer);
  worker.disconnectTimer = null;
  worker.socket?.terminate();
  worker.socket = null;
  deps.events.workerLost(worker, reason);
  if (worker.isDraining) deps.registry.remove(worker.id);
  deps.registry.forgetOldDead();
}

/** Drain (SPEC §6.5): no new work; the worker finishes, tears down and leaves. */
export function drainWorker(worker: WorkerEntry): void {
  if (worker.isDraining) return;
  worker.isDraining = true;
  worker.send({ type: 'shutdown' });
}

/**
 * One authenticated WebSocket of one worker. Every frame is validated; a lease's frames are handled in
 * order, each after the previous one's I/O, while frames of other leases go on in parallel. Frames and the
 * close are handled through the endpoint's ingest queue, in the order they came, a few ms of them per turn.
 */
export function attachWorkerSession(socket: WebSocket, deps: SessionDeps, ingest: IngestQueue, isLoginValid: (proof: string) => boolean): void {
  let worker: WorkerEntry | null = null;
  const log = deps.log;

  const fail = (reason: string) => {
    log.warn({ workerId: worker?.id, reason }, 'closing worker connection: protocol violation');
    sendTo(socket, { type: 'error', code: 'PROTOCOL_ERROR', message: reason });
    socket.close(CLOSE_PROTOCOL_ERROR, reason.slice(0, 120));
  };

  /** Results of unknown leases are refused: the worker must stop what it runs under them. */
  const leaseFor = (current: WorkerEntry, leaseId: string): Lease | null => {
    const lease = current.leases.get(leaseId);
    if (!lease) {
      sendTo(socket, { type: 'abort_lease', lease_id: leaseId, reason: 'lease_lost' });
      return null;
    }
    return lease;
  };

  const logFailure = (lease: Lease, error: unknown) => log.error({ workerId: worker?.id, leaseId: lease.id, err: error }, 'handling a worker message failed');
  const follow = (lease: Lease, pending: Promise<void>) => {
    const tail: Promise<void> = pending.catch((error: unknown) => logFailure(lease, error)).then(() => {
      if (lease.chain === tail) lease.chain = null;
    });
    lease.chain = tail;
  };
  // With nothing of the lease in flight the step runs now, inside the ingest queue's step (whose time budget
  // then counts it) rather than in a microtask after it.
  const inOrder = (lease: Lease, step: () => Promise<void> | void) => {
    if (lease.chain !== null) {
      follow(lease, lease.chain.then(step));
      return;
    }
    try {
      const pending = step();
      if (pending instanceof Promise) follow(lease, pending);
    } catch (error) {
      logFailure(lease, error);
    }
  };

  // A connection that never registers would otherwise hold a socket for ever.
  const registerTimer = setTimeout(() => {
    if (worker === null) fail(`no "register" within ${deps.registerTimeoutMs} ms`);
  }, deps.registerTimeoutMs);
  registerTimer.unref();

  const register = (message: RegisterMessage) => {
    clearTimeout(registerTimer);
    if (message.protocol_version !== PROTOCOL_VERSION) {
      fail(`protocol version ${message.protocol_version} is not supported (the master speaks ${PROTOCOL_VERSION})`);
      return;
    }
    // Bound to this connection's nonce: a login captured by a fake master or on the path is refused here.
    if (!isLoginValid(message.proof)) {
      log.warn({ worker: message.name }, 'worker login refused: its proof is not for this connection (a replay, or another secret)');
      sendTo(socket, { type: 'error', code: 'NOT_AUTHENTICATED', message: 'register proof does not match this connection' });
      socket.close(CLOSE_UNAUTHENTICATED, 'not authenticated');
      return;
    }
    const previous = message.resume ? deps.registry.get(message.resume.worker_id) : undefined;
    if (previous && previous.isAlive && previous.sessionId === message.session_id) {
      if (previous.disconnectTimer) clearTimeout(previous.disconnectTimer);
      previous.disconnectTimer = null;
      if (previous.socket && previous.socket !== socket) previous.socket.close(CLOSE_REPLACED, 'replaced by a newer connection');
      previous.socket = socket;
      previous.lastSeenMs = Date.now();
      previous.labels = new Set(message.labels ?? []);
      previous.acceptsQueuedSubjobs = message.accepts_queued_subjobs === true;
      const listed = new Set(message.resume!.leases);
      const resumed: string[] = [];
      for (const lease of [...previous.leases.values()]) {
        if (listed.has(lease.id) && !lease.isRevoked) resumed.push(lease.id);
        else if (!listed.has(lease.id)) deps.events.leaseDropped(previous, lease);
      }
      worker = previous;
      sendTo(socket, {
        type: 'registered', worker_id: previous.id, master_session_id: deps.masterSessionId, resumed_leases: resumed,
        received_output: receivedOutput(previous, resumed),
      });
      // What was said to it while it was away went nowhere (WorkerEntry.send drops it): its own list of builds
      // set up decides, and a teardown_build still owed is said again (a build canceled meanwhile).
      deps.events.buildsReported(previous, message.builds ?? []);
      if (previous.isDraining) sendTo(socket, { type: 'shutdown' });
      else if (deps.registry.beingStopped.has(previous.name)) drainWorker(previous);
      log.info({ workerId: previous.id, worker: previous.name, resumed: resumed.length }, 'worker reconnected');
      deps.events.workerReady(previous);
      return;
    }
    // Same name and session as the id it asks for (a reconnection, also to a restarted master): it keeps that
    // id, so lists, metrics and the event log follow one machine (issue 15 item 4). Anything else is new.
    const kept = message.resume !== null && (previous === undefined || !previous.isAlive) &&
      deps.workerStore.isSameWorker(message.resume.worker_id, message.name, message.session_id) ? message.resume.worker_id : null;
    if (kept !== null) deps.workerStore.touch(kept);
    const id = kept ?? deps.workerStore.insert(message.name, message.session_id);
    worker = new WorkerEntry({
      id,
      name: message.name,
      sessionId: message.session_id,
      numExecutors: message.num_executors,
      heartbeatIntervalMs: message.heartbeat_interval_ms,
      heartbeatFailureThreshold: message.heartbeat_failure_threshold,
      socket,
    });
    worker.failureSuspicion = deps.workerStore.suspicionOf(message.name);
    worker.labels = new Set(message.labels ?? []);
    worker.acceptsQueuedSubjobs = message.accepts_queued_subjobs === true;
    worker.pool = message.pool ?? null;
    deps.registry.add(worker);
    // A worker that outlived a restart of this master may go on with what it runs, if the master kept it.
    const resumed = message.resume ? deps.events.adoptLeases(worker, message.resume.leases) : [];
    sendTo(socket, {
      type: 'registered', worker_id: id, master_session_id: deps.masterSessionId, resumed_leases: resumed,
      received_output: receivedOutput(worker, resumed),
    });
    deps.events.buildsReported(worker, message.builds ?? []);
    if (deps.registry.beingStopped.has(worker.name)) drainWorker(worker);
    log.info({ workerId: id, worker: message.name, executors: message.num_executors, resumed: resumed.length, keptId: kept !== null }, 'worker connected');
    deps.events.workerReady(worker);
  };

  const onBinary = (current: WorkerEntry, frame: Buffer) => {
    let decoded;
    try {
      decoded = decodeArtifactChunk(frame);
    } catch (error) {
      fail(`invalid artifact frame: ${errorMessage(error)}`);
      return;
    }
    const lease = leaseFor(current, decoded.header.lease_id);
    if (!lease || lease.isRevoked) return;
    inOrder(lease, () => deps.events.artifactChunk(current, lease, decoded.header, decoded.bytes));
  };

  const onText = (current: WorkerEntry | null, raw: string) => {
    const parsed = parseFrame(workerMessage, raw);
    if (!parsed.ok) {
      fail(parsed.error);
      return;
    }
    const message = parsed.message;
    if (current === null) {
      if (message.type === 'register') register(message);
      else fail(`the first message must be "register", not "${message.type}"`);
      return;
    }
    switch (message.type) {
      case 'register':
        fail('already registered');
        return;
      case 'heartbeat':
        sendTo(socket, { type: 'heartbeat_ack' });
        recordHeartbeat(current, message, deps);
        return;
      case 'draining':
        current.isDraining = true;
        return;
      case 'setup_finished':
        deps.events.setupFinished(current, message);
        return;
      case 'teardown_finished':
        deps.events.teardownFinished(current, message);
        return;
      case 'atom_started':
      case 'atom_output':
      case 'atom_finished':
      case 'subjob_refused':
      case 'subjob_finished': {
        const lease = leaseFor(current, message.lease_id);
        if (!lease) return;
        if (lease.buildId !== message.build_id || lease.subjobId !== message.subjob_id) {
          fail(`lease ${lease.id} belongs to build ${lease.buildId} subjob ${lease.subjobId}`);
          return;
        }
        if (message.type === 'subjob_refused') {
          // Before the executor is free again: the next dispatch pass must already see the back-off.
          deps.events.subjobRefused(current, lease, message);
          deps.events.executorFreed(current, lease);
          inOrder(lease, () => deps.events.subjobFinished(current, lease));
        } else if (message.type === 'subjob_finished') {
          deps.events.executorFreed(current, lease);
          inOrder(lease, () => deps.events.subjobFinished(current, lease));
        }
        else if (lease.isRevoked) return;
        else if (message.type === 'atom_started') {
          lease.outputBytes.set(message.atom_id, lease.outputBytes.get(message.atom_id) ?? 0);
          inOrder(lease, () => deps.events.atomStarted(current, lease, message));
        } else if (message.type === 'atom_output') {
          lease.outputBytes.set(message.atom_id, (lease.outputBytes.get(message.atom_id) ?? 0) + Buffer.byteLength(message.data));
          inOrder(lease, () => deps.events.atomOutput(current, lease, message));
        } else {
          lease.outputBytes.delete(message.atom_id);
          inOrder(lease, () => deps.events.atomFinished(current, lease, message));
        }
        return;
      }
      default: {
        const unexpected: never = message;
        fail(`unexpected message ${JSON.stringify(unexpected).slice(0, 80)}`);
      }
    }
  };

  const onMessage = (data: RawData, isBinary: boolean) => {
    const current = worker;
    // ws hands the master Buffers (its default binaryType): a frame is read in place, not copied.
    const buffer = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    if (isBinary) {
      if (current === null) fail('binary frame before "register"');
      else onBinary(current, buffer);
      return;
    }
    onText(current, buffer.toString('utf8'));
  };
  socket.on('message', (data: RawData, isBinary: boolean) => {
    // Seen now, not when the queue gets to it: a busy master must not take a queued heartbeat for silence.
    if (worker) worker.lastSeenMs = Date.now();
    ingest.push(socket, () => onMessage(data, isBinary));
  });

  socket.on('error', (error) => log.warn({ workerId: worker?.id, err: error }, 'worker socket error'));

  socket.on('close', () => ingest.push(socket, onClose));
  const onClose = () => {
    clearTimeout(registerTimer);
    const current = worker;
    if (current === null || current.socket !== socket || deps.registry.isClosed) return;
    current.socket = null;
    if (!current.isAlive) return;
    if (current.isDraining && current.leases.size === 0) {
      current.isAlive = false;
      deps.registry.remove(current.id);
      deps.events.workerLeft(current);
      return;
    }
    // It may come back within the lease window and resume its leases; until then its work waits.
    log.info({ workerId: current.id, windowMs: current.leaseWindowMs }, 'worker disconnected; waiting for it to come back');
    current.disconnectTimer = setTimeout(() => markWorkerLost(current, deps, 'disconnected'), current.leaseWindowMs);
  };
}

/** Keeps the heartbeat's figures for the worker shape; a change of the worker's own verdict is news to dispatch. */
function recordHeartbeat(worker: WorkerEntry, message: HeartbeatMessage, deps: SessionDeps): void {
  const before = worker.machine.reported;
  worker.lastHeartbeatMs = Date.now();
  worker.machine = {
    reported: message.health ?? 'healthy',
    reason: message.health === 'unhealthy' ? (message.health_reason ?? null) : null,
    ...(message.cpu_count === undefined ? {} : { cpuCount: message.cpu_count }),
    ...(message.load1 === undefined ? {} : { load1: message.load1 }),
    ...(message.memory_total_bytes === undefined ? {} : { memoryTotalBytes: message.memory_total_bytes }),
    ...(message.memory_available_bytes === undefined ? {} : { memoryAvailableBytes: message.memory_available_bytes }),
    ...(message.disk_free_bytes === undefined ? {} : { diskFreeBytes: message.disk_free_bytes }),
  };
  if (worker.machine.reported !== before) deps.events.healthChanged(worker, worker.machine.reported, worker.machine.reason);
}

/** Declares silent workers dead (a frozen process keeps its socket open but stops its heartbeats). */
export function startLivenessSweep(deps: SessionDeps, intervalMs: number): { close(): void } {
  const timer = setInterval(() => {
    const now = Date.now();
    for (const worker of [...deps.registry.all()]) {
      if (worker.isAlive && worker.socket && now - worker.lastSeenMs > worker.leaseWindowMs) {
        markWorkerLost(worker, deps, `no heartbeat for ${Math.round((now - worker.lastSeenMs) / 1000)} s`);
      }
    }
  }, intervalMs);
  timer.unref();
  return { close: () => clearInterval(timer) };
}
