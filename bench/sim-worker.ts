/**
 * A simulated worker for benchmarks: the worker's own connection (worker/connection.ts: signed upgrade,
 * mutual authentication, registration, heartbeats) and protocol (shared/protocol.ts), but it runs nothing.
 * Setup succeeds at once, every atom of a subjob "finishes" at once with exit code 0 and no artifacts, and
 * teardown succeeds at once, so the master under test is the only thing doing real work per atom.
 */
import { randomUUID } from 'node:crypto';
import { createSilentLogger } from '../shared/log.ts';
import { PROTOCOL_VERSION, type MasterMessage, type RunSubjobMessage } from '../shared/protocol.ts';
import { MasterConnection } from '../worker/connection.ts';

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
  /** Called for every atom_started sent, with its performance.now() time (for the cold start's figures). */
  readonly onAtomStarted?: (atTimeMs: number) => void;
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
/** A benchmark that cannot reach its master in this long has failed; there is nothing to wait for. */
const MASTER_UNREACHABLE_MS = 30_000;

/** Connects, registers and serves until close(). A reconnect is recorded as an error: a benchmark wants to see a drop. */
export function startSimWorker(options: SimWorkerOptions): SimWorker {
  const numExecutors = options.numExecutors ?? 8;
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? 5000;
  const heartbeatFailureThreshold = options.heartbeatFailureThreshold ?? 3;
  const counts: SimWorkerCounts = { subjobs: 0, atoms: 0, setups: 0, teardowns: 0, cancels: 0, abortedLeases: 0, errors: [] };
  const recordError = (text: string) => {
    if (counts.errors.length < MAX_RECORDED_ERRORS) counts.errors.push(text);
  };
  const sessionId = randomUUID();

  let resolveRegistered: (workerId: number) => void = () => undefined;
  let rejectRegistered: (error: Error) => void = () => undefined;
  const registered = new Promise<number>((resolve, reject) => {
    resolveRegistered = resolve;
    rejectRegistered = reject;
  });
  // A failed registration is reported through `registered`; this keeps it from being an unhandled rejection.
  registered.catch(() => undefined);
  let registrations = 0;

  const connection = new MasterConnection({
    masterUrl: options.masterUrl,
    secret: options.secret,
    log: createSilentLogger(),
    heartbeatIntervalMs,
    heartbeatFailureThreshold,
    masterUnreachableMs: MASTER_UNREACHABLE_MS,
    registration: () => ({
      type: 'register',
      protocol_version: PROTOCOL_VERSION,
      name: options.name,
      num_executors: numExecutors,
      session_id: sessionId,
      heartbeat_interval_ms: heartbeatIntervalMs,
      heartbeat_failure_threshold: heartbeatFailureThreshold,
      resume: null,
    }),
    onMessage: (message) => handle(message),
    onRegistered: (workerId) => {
      if (registrations++ > 0) recordError(`the connection dropped and registered again (worker ${workerId})`);
      resolveRegistered(workerId);
    },
    onUnreachable: (reason) => {
      recordError(`master unreachable: ${reason}`);
      rejectRegistered(new Error(`cannot reach the master: ${reason}`));
    },
  });
  const send = (message: Parameters<MasterConnection['send']>[0]) => connection.send(message);

  const runSubjob = (message: RunSubjobMessage) => {
    counts.subjobs++;
    const ids = { lease_id: message.lease_id, build_id: message.build_id, subjob_id: message.subjob_id };
    for (const atom of message.atoms) {
      send({ type: 'atom_started', ...ids, atom_id: atom.atom_id });
      options.onAtomStarted?.(performance.now());
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

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= connection.close();
    return closing;
  };

  connection.start();
  return { name: options.name, counts, registered, close };
}
