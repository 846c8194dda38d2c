/**
 * A simulated worker for benchmarks: it speaks the worker protocol (shared/protocol.ts) over a real signed
 * WebSocket, exactly as worker/connection.ts and worker/daemon.ts do, but runs nothing. Setup succeeds at
 * once, every atom of a subjob "finishes" at once with exit code 0 and no artifacts, and teardown succeeds
 * at once, so the master under test is the only thing doing real work per atom.
 *
 * Imports come from shared/ only: the benchmark must measure the master, not depend on the worker's code.
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { signRequest } from '../shared/auth.ts';
import {
  CLOSE_SHUTDOWN, MAX_FRAME_BYTES, PROTOCOL_VERSION, WORKER_CONNECT_PATH, masterMessage, parseFrame,
  type MasterMessage, type RunSubjobMessage, type WorkerMessage,
} from '../shared/protocol.ts';

export interface SimWorkerOptions {
  /** The master's base URL, e.g. http://127.0.0.1:43000. */
  readonly masterUrl: string;
  readonly secret: string;
  /** Must be unique per master (the master stores one row per name). */
  readonly name: string;
  /** Executors announced in register; default 8. */
  readonly numExecutors?: number;
  /** Heartbeat interval announced and kept, in ms; default 5000 (the conf default). */
  readonly heartbeatIntervalMs?: number;
  /** Missed heartbeats before the master declares this worker dead; default 3. */
  readonly heartbeatFailureThreshold?: number;
  /** Called for every atom_finished sent, with its performance.now() time (for throughput figures). */
  readonly onAtomFinished?: (atTimeMs: number) => void;
}

/** What one simulated worker saw and said, for the benchmark's summary. */
export interface SimWorkerCounts {
  subjobs: number;
  atoms: number;
  setups: number;
  teardowns: number;
  cancels: number;
  abortedLeases: number;
  /** `error` messages from the master, and frames this worker could not parse: both mean a protocol bug. */
  errors: string[];
}

export interface SimWorker {
  readonly name: string;
  readonly counts: SimWorkerCounts;
  /** Resolves with the worker id once the master answered register; rejects if the connection fails first. */
  readonly registered: Promise<number>;
  /** Closes the socket with the normal shutdown code; idempotent. */
  close(): Promise<void>;
}

const MAX_RECORDED_ERRORS = 20;

/** Connects, registers and serves until close(); there is no reconnect: a benchmark wants to see a drop. */
export function startSimWorker(options: SimWorkerOptions): SimWorker {
  const numExecutors = options.numExecutors ?? 8;
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 5000;
  const counts: SimWorkerCounts = { subjobs: 0, atoms: 0, setups: 0, teardowns: 0, cancels: 0, abortedLeases: 0, errors: [] };
  const recordError = (text: string) => {
    if (counts.errors.length < MAX_RECORDED_ERRORS) counts.errors.push(text);
  };

  const base = new URL(options.masterUrl);
  const url = `${base.protocol === 'https:' ? 'wss:' : 'ws:'}//${base.host}${WORKER_CONNECT_PATH}`;
  const socket = new WebSocket(url, {
    headers: signRequest(options.secret, 'GET', WORKER_CONNECT_PATH),
    maxPayload: MAX_FRAME_BYTES,
    handshakeTimeout: 30_000,
    // Results are many tiny frames: compression would cost both sides CPU for nothing.
    perMessageDeflate: false,
  });
  const send = (message: WorkerMessage) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  };

  let heartbeatTimer: NodeJS.Timeout | null = null;
  let closing: Promise<void> | null = null;
  const registered = new Promise<number>((resolve, reject) => {
    socket.on('open', () => {
      send({
        type: 'register',
        protocol_version: PROTOCOL_VERSION,
        name: options.name,
        num_executors: numExecutors,
        session_id: randomUUID(),
        heartbeat_interval_ms: heartbeatIntervalMs,
        heartbeat_failure_threshold: options.heartbeatFailureThreshold ?? 3,
        resume: null,
      });
    });
    socket.on('error', (error) => {
      recordError(`socket error: ${error.message}`);
      reject(error);
    });
    socket.on('close', (code, reason) => {
      if (heartbeatTimer) clearInterval(heartbeatTimer);
      heartbeatTimer = null;
      if (closing === null) recordError(`the master closed the connection: ${code} ${reason.toString()}`);
      reject(new Error(`connection closed before registration (${code} ${reason.toString()})`));
    });
    socket.on('message', (data, isBinary) => {
      if (isBinary) {
        recordError('unexpected binary frame from the master');
        return;
      }
      const parsed = parseFrame(masterMessage, data.toString());
      if (!parsed.ok) {
        recordError(parsed.error);
        return;
      }
      const message = parsed.message;
      if (message.type === 'registered') {
        heartbeatTimer = setInterval(() => send({ type: 'heartbeat' }), heartbeatIntervalMs);
        heartbeatTimer.unref();
        resolve(message.worker_id);
        return;
      }
      handle(message);
    });
  });
  // A failed registration is reported through `registered`; this keeps it from being an unhandled rejection.
  registered.catch(() => undefined);

  const runSubjob = (message: RunSubjobMessage) => {
    counts.subjobs++;
    const ids = { lease_id: message.lease_id, build_id: message.build_id, subjob_id: message.subjob_id };
    for (const atom of message.atoms) {
      send({ type: 'atom_started', ...ids, atom_id: atom.atom_id });
      send({ type: 'atom_finished', ...ids, atom_id: atom.atom_id, exit_code: 0, time_s: 0, stop_reason: null, has_artifacts: false });
      counts.atoms++;
      options.onAtomFinished?.(performance.now());
    }
    send({ type: 'subjob_finished', ...ids });
  };

  const handle = (message: MasterMessage) => {
    switch (message.type) {
      case 'setup_build':
        counts.setups++;
        send({ type: 'setup_finished', build_id: message.build_id, ok: true, exit_code: 0, output_tail: '' });
        return;
      case 'run_subjob':
        runSubjob(message);
        return;
      case 'abort_lease':
        // Nothing runs here between messages, so there is nothing to stop; the count shows it happened.
        counts.abortedLeases++;
        return;
      case 'cancel_build':
        counts.cancels++;
        send({ type: 'teardown_finished', build_id: message.build_id, ok: true, exit_code: null, output_tail: '' });
        return;
      case 'teardown_build':
        counts.teardowns++;
        send({ type: 'teardown_finished', build_id: message.build_id, ok: true, exit_code: null, output_tail: '' });
        return;
      case 'shutdown':
        void close();
        return;
      case 'error':
        recordError(`master error ${message.code}: ${message.message}`);
        return;
      case 'registered':
      case 'heartbeat_ack':
        return;
      default: {
        const unexpected: never = message;
        recordError(`unexpected message ${JSON.stringify(unexpected).slice(0, 80)}`);
      }
    }
  };

  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      if (heartbeatTimer) clearInterval(heartbeatTimer);
      heartbeatTimer = null;
      if (socket.readyState === WebSocket.CLOSED) {
        resolve();
        return;
      }
      const timer = setTimeout(() => {
        socket.terminate();
        resolve();
      }, 2000);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (socket.readyState === WebSocket.CONNECTING) socket.terminate();
      else socket.close(CLOSE_SHUTDOWN, 'simulated worker done');
    });
    return closing;
  };

  return { name: options.name, counts, registered, close };
}
