import WebSocket from 'ws';
import type { Logger } from '../shared/log.ts';
import { NONCE_HEADER, signRequest } from '../shared/auth.ts';
import {
  CLOSE_MASTER_UNAUTHENTICATED, CLOSE_SHUTDOWN, CLOSE_UNAUTHENTICATED, MAX_FRAME_BYTES, PROTOCOL_VERSION, WORKER_CONNECT_PATH,
  helloMessage, masterMessage, parseFrame, type HeartbeatMessage, type MasterMessage, type RegisteredMessage, type RegisterMessage, type WorkerMessage,
} from '../shared/protocol.ts';
import {
  FrameOpener, WORKER_CHALLENGE_HEADER, createNonce, isMasterProofValid, registerProof, type ConnectionBinding,
} from '../shared/worker-auth.ts';

export interface ConnectionOptions {
  readonly masterUrl: string;
  readonly secret: string;
  readonly log: Logger;
  readonly heartbeatIntervalMs: number;
  readonly heartbeatFailureThreshold: number;
  /** Give up (onUnreachable) after this long without a registered connection. */
  readonly masterUnreachableMs: number;
  /** The register message for the next connection (it carries the leases to resume). */
  readonly registration: () => Omit<RegisterMessage, 'proof'>;
  readonly onMessage: (message: MasterMessage) => void;
  /**
   * Called after each successful registration, with the leases the master resumed and how much console
   * output it holds of their atoms, before anything queued meanwhile is sent.
   */
  readonly onRegistered: (workerId: number, resumedLeases: readonly string[], receivedOutput: readonly ReceivedOutput[]) => void;
  readonly onUnreachable: (reason: string) => void;
  /** The machine figures and health verdict each heartbeat carries (SPEC §13, worker/health.ts); default none. */
  readonly heartbeatReport?: () => Omit<HeartbeatMessage, 'type'>;
}

export type ReceivedOutput = RegisteredMessage['received_output'][number];

/** Messages kept while the master is away; results matter most, so live output is what gets dropped. */
const MAX_QUEUED_MESSAGES = 10_000;
/** Above this much unsent data on the socket, live console output is dropped rather than buffered. */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
const BACKOFF_FIRST_MS = 200;
/** Capped low: a master back from an outage keeps the leases it finds for 30 s (master/builds/recovery.ts). */
const BACKOFF_MAX_MS = 5_000;

/**
 * How long the worker waits without hearing from the master before it drops the connection and dials again.
 * The master gives a silent worker's leases away after interval × threshold (its lease window); giving up
 * on a dead link (a half-open socket, a NAT that forgot us) at half that leaves the other half to reconnect
 * and resume the leases instead of seeing the work run again elsewhere. Never under two intervals: the ack
 * of a heartbeat takes a moment, more on a busy master.
 */
export function silenceLimitMs(heartbeatIntervalMs: number, heartbeatFailureThreshold: number): number {
  return Math.max(heartbeatIntervalMs * 2, (heartbeatIntervalMs * heartbeatFailureThreshold) / 2);
}

/**
 * Why a connection attempt failed, in words an operator can act on: DNS, connection refused, TLS, an HTTP
 * status, rather than the bare close code 1006 the WebSocket reports for all of them.
 */
export function connectionFailureCause(error: Error & { code?: string }, masterUrl: string): string {
  const url = new URL(masterUrl);
  const code = error.code ?? '';
  const status = /Unexpected server response: (\d+)/.exec(error.message);
  if (status) {
    const hint = status[1] === '401' ? ' (the master refused the signature: is the secret the same on both?)' :
      status[1] === '404' ? ' (is master_url the master, and not another server?)' : '';
    return `HTTP status ${status[1]} from ${url.host}${hint}`;
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_FAIL' || code === 'EAI_NONAME') {
    return `DNS lookup of ${url.hostname} failed (${code})`;
  }
  if (code === 'ECONNREFUSED') return `connection refused by ${url.host} (is the master running, on that port?)`;
  if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `${url.host} is unreachable (${code})`;
  if (code === 'ECONNRESET') return `connection to ${url.host} reset by the peer`;
  if (code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || code === 'EPROTO' || /CERT|SELF_SIGNED|SSL|TLS/.test(code + error.message)) {
    return `TLS with ${url.host} failed: ${error.message}${code ? ` (${code})` : ''}`;
  }
  return `${error.message}${code ? ` (${code})` : ''}`;
}

/**
 * The worker's one WebSocket to the master: signed upgrade, registration, heartbeats both ways,
 * reconnection with exponential backoff and jitter, and a bounded queue for what is said while away.
 */
export class MasterConnection {
  readonly #options: ConnectionOptions;
  #socket: WebSocket | null = null;
  #isRegistered = false;
  #isClosed = false;
  #attempt = 0;
  #disconnectedSinceMs = Date.now();
  #lastHeardMs = Date.now();
  /** Runs from 'open' to 'close': heartbeats once registered, and the silence check all along. */
  #heartbeatTimer: NodeJS.Timeout | null = null;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #queue: WorkerMessage[] = [];
  #droppedOutput = 0;
  #queuedOutputChars = 0;
  /** The uncork of the current turn, while the socket is corked (see #corkForThisTurn). */
  #corked: NodeJS.Immediate | null = null;
  #waiters: (() => void)[] = [];
  /** The last reason the master could not be reached, logged once per change (issue 15 item 6). */
  #lastCause: string | null = null;

  constructor(options: ConnectionOptions) {
    this.#options = options;
  }

  get isRegistered(): boolean {
    return this.#isRegistered;
  }

  start(): void {
    this.#connect();
  }

  /**
   * True while live output should wait: the master is away, or the socket already holds more unsent data
   * than we allow. Executors pause reading their command's output until it clears.
   */
  get isCongested(): boolean {
    const socket = this.#socket;
    return !this.#isRegistered || socket === null || socket.bufferedAmount > MAX_BUFFERED_BYTES;
  }

  /** Sends now when registered, else queues (bounded). */
  send(message: WorkerMessage): void {
    const socket = this.#socket;
    if (this.#isRegistered && socket && socket.readyState === WebSocket.OPEN) {
      // Executors pause their commands long before this; the hard cap only guards against a runaway.
      if (message.type === 'atom_output' && socket.bufferedAmount > 4 * MAX_BUFFERED_BYTES) {
        this.#droppedOutput++;
        return;
      }
      this.#corkForThisTurn(socket);
      socket.send(JSON.stringify(message));
      return;
    }
    if (message.type === 'heartbeat') return;
    if (message.type === 'atom_output') {
      // Executors stop reading their commands' output while the master is away, so little arrives here (the
      // chunk in hand when the connection went); kept, so a resumed atom's console output has no hole.
      if (this.#queuedOutputChars + message.data.length > MAX_BUFFERED_BYTES) {
        this.#droppedOutput++;
        return;
      }
      this.#queuedOutputChars += message.data.length;
    }
    if (this.#queue.length >= MAX_QUEUED_MESSAGES) {
      this.#options.log.error({ type: message.type }, 'message queue for the master is full; dropping a message');
      return;
    }
    this.#queue.push(message);
  }

  /**
   * The messages of one turn (an atom's end and its subjob's, the next atom's start) leave in one write, and
   * reach the master in one read, instead of one syscall and one wake-up each (issue 18).
   */
  #corkForThisTurn(socket: WebSocket): void {
    if (this.#corked !== null) return;
    // ws keeps its net.Socket here; without one there is nothing to cork.
    const raw = (socket as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    if (raw === undefined) return;
    raw.cork();
    this.#corked = setImmediate(() => {
      this.#corked = null;
      raw.uncork();
    });
  }

  /** Sends a binary frame once registered, waiting while the socket's buffer is full (backpressure). */
  async sendBinary(frame: Buffer, isStillWanted: () => boolean): Promise<boolean> {
    for (;;) {
      if (this.#isClosed || !isStillWanted()) return false;
      const socket = this.#socket;
      if (this.#isRegistered && socket && socket.readyState === WebSocket.OPEN) {
        if (socket.bufferedAmount < MAX_BUFFERED_BYTES) {
          socket.send(frame);
          return true;
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
        continue;
      }
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 1000).unref();
      });
    }
  }

  /** Leases with results still waiting to be sent: the master must hear of them on reconnect. */
  queuedLeaseIds(): Set<string> {
    const ids = new Set<string>();
    for (const message of this.#queue) if ('lease_id' in message) ids.add(message.lease_id);
    return ids;
  }

  /** Drops queued messages of leases the master no longer honours. */
  dropQueued(predicate: (message: WorkerMessage) => boolean): void {
    this.#queue = this.#queue.filter((message) => !predicate(message));
    this.#queuedOutputChars = 0;
    for (const message of this.#queue) if (message.type === 'atom_output') this.#queuedOutputChars += message.data.length;
  }

  /** Closes for good; a clean close tells the master this worker left on purpose. */
  async close(): Promise<void> {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#stopTimers();
    const socket = this.#socket;
    this.#socket = null;
    for (const wake of this.#waiters.splice(0)) wake();
    if (!socket || socket.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        socket.terminate();
        resolve();
      }, 2000);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.close(CLOSE_SHUTDOWN, 'worker shutting down');
    });
  }

  #connect(): void {
    if (this.#isClosed) return;
    const base = new URL(this.#options.masterUrl);
    const scheme = base.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${base.host}${WORKER_CONNECT_PATH}`;
    const challenge = createNonce();
    const signed = signRequest(this.#options.secret, 'GET', WORKER_CONNECT_PATH);
    const socket = new WebSocket(url, {
      headers: { ...signed, [WORKER_CHALLENGE_HEADER]: challenge },
      maxPayload: MAX_FRAME_BYTES,
      handshakeTimeout: 10_000,
    });
    this.#socket = socket;
    /** Set once the master answered the challenge; until then nothing it says is acted on. */
    let opener: FrameOpener | null = null;
    const refuseMaster = (reason: string) => {
      this.#options.log.error({ master: this.#options.masterUrl, reason }, 'the master did not authenticate; closing without running anything');
      socket.close(CLOSE_MASTER_UNAUTHENTICATED, 'master not authenticated');
      // A peer that never completes the close must not keep us waiting for the closing handshake.
      setTimeout(() => socket.terminate(), 2000).unref();
    };
    socket.on('open', () => {
      this.#lastHeardMs = Date.now();
      // Checked from here, not from 'registered': a link that dies before the answer would otherwise hang for ever.
      this.#heartbeatTimer = setInterval(() => this.#heartbeat(socket), this.#options.heartbeatIntervalMs);
    });
    socket.on('message', (data, isBinary) => {
      if (isBinary || socket.readyState !== WebSocket.OPEN) return;
      if (opener === null) {
        const hello = parseFrame(helloMessage, data.toString());
        if (!hello.ok) {
          refuseMaster(`its first frame is not a valid hello (${hello.error})`);
          return;
        }
        if (hello.message.protocol_version !== PROTOCOL_VERSION) {
          refuseMaster(`it speaks protocol version ${hello.message.protocol_version}, this worker ${PROTOCOL_VERSION}`);
          return;
        }
        const binding: ConnectionBinding = { challenge, upgradeNonce: signed[NONCE_HEADER] ?? '', masterNonce: hello.message.master_nonce };
        if (!isMasterProofValid(this.#options.secret, binding, hello.message.proof)) {
          refuseMaster('its answer to the challenge is wrong: it does not hold this worker\'s secret');
          return;
        }
        this.#lastHeardMs = Date.now();
        opener = new FrameOpener(this.#options.secret, binding);
        socket.send(JSON.stringify({ ...this.#options.registration(), proof: registerProof(this.#options.secret, binding) } satisfies RegisterMessage));
        return;
      }
      const opened = opener.open(data.toString());
      if (!opened.ok) {
        refuseMaster(opened.error);
        return;
      }
      this.#lastHeardMs = Date.now();
      const parsed = parseFrame(masterMessage, opened.body);
      if (!parsed.ok) {
        this.#options.log.warn({ error: parsed.error }, 'ignoring an invalid message from the master');
        return;
      }
      const message = parsed.message;
      if (message.type === 'registered') {
        this.#onRegistered(socket, message.worker_id, message.resumed_leases, message.received_output);
        return;
      }
      if (message.type === 'heartbeat_ack') return;
      this.#options.onMessage(message);
    });
    /** This attempt's failure in words, from its error event (which comes before close). */
    let cause: string | null = null;
    socket.on('error', (error) => {
      cause ??= connectionFailureCause(error, this.#options.masterUrl);
      this.#options.log.debug({ err: error }, 'connection to the master failed');
    });
    socket.on('close', (code, reason) => {
      if (this.#socket !== socket) return;
      const wasRegistered = this.#isRegistered;
      this.#isRegistered = false;
      this.#socket = null;
      this.#stopTimers();
      if (this.#isClosed) return;
      if (wasRegistered) this.#disconnectedSinceMs = Date.now();
      if (code === CLOSE_UNAUTHENTICATED) {
        this.#options.onUnreachable('the master refused this worker\'s secret: make the secret in the worker\'s conf file match the master\'s');
        return;
      }
      const said = cause ?? `closed with code ${code}${reason.length > 0 ? ` (${reason.toString()})` : ''}`;
      if (wasRegistered) {
        this.#options.log.warn({ code, reason: reason.toString(), cause: said }, 'lost the connection to the master; reconnecting');
        this.#lastCause = said;
      } else if (said !== this.#lastCause) {
        // Once per change, not once per retry: a worker pointed at the wrong place would fill its log.
        this.#options.log.warn({ master: this.#options.masterUrl, cause: said }, `cannot reach the master: ${said}; retrying`);
        this.#lastCause = said;
      }
      this.#scheduleReconnect();
    });
  }

  #onRegistered(socket: WebSocket, workerId: number, resumed: readonly string[], receivedOutput: readonly ReceivedOutput[]): void {
    this.#isRegistered = true;
    this.#attempt = 0;
    this.#lastCause = null;
    this.#options.onRegistered(workerId, resumed, receivedOutput);
    const queued = this.#queue;
    this.#queue = [];
    this.#queuedOutputChars = 0;
    for (const message of queued) socket.send(JSON.stringify(message));
    if (this.#droppedOutput > 0) {
      this.#options.log.warn({ chunks: this.#droppedOutput }, 'dropped console output while the master was slow or away');
      this.#droppedOutput = 0;
    }
    for (const wake of this.#waiters.splice(0)) wake();
  }

  #heartbeat(socket: WebSocket): void {
    if (this.#isSilent()) {
      // Decided after the poll phase: when this process itself stalled, the master's answers may be waiting
      // unread in the socket, and a stall of ours is no reason to drop a healthy connection.
      setImmediate(() => {
        if (this.#socket !== socket || !this.#isSilent()) return;
        this.#options.log.warn({ silentMs: Date.now() - this.#lastHeardMs, isRegistered: this.#isRegistered }, 'the master stopped answering; reconnecting');
        socket.terminate();
      });
      return;
    }
    // Before the master's answer to "register", anything else would be a protocol error.
    this.heartbeatNow();
  }

  /** A heartbeat now (also when the health verdict changed); nothing while not registered. */
  heartbeatNow(): void {
    const socket = this.#socket;
    // Before the master's answer to "register", anything else would be a protocol error.
    if (!this.#isRegistered || socket === null || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: 'heartbeat', ...this.#options.heartbeatReport?.() } satisfies WorkerMessage));
  }

  #isSilent(): boolean {
    return Date.now() - this.#lastHeardMs > silenceLimitMs(this.#options.heartbeatIntervalMs, this.#options.heartbeatFailureThreshold);
  }

  #scheduleReconnect(): void {
    const awayMs = Date.now() - this.#disconnectedSinceMs;
    if (awayMs > this.#options.masterUnreachableMs) {
      this.#options.onUnreachable(`the master at ${this.#options.masterUrl} has been unreachable for ${Math.round(awayMs / 1000)} s` +
        `${this.#lastCause === null ? '' : ` (last: ${this.#lastCause})`}`);
      return;
    }
    // Exponential backoff with full jitter: many workers losing one master must not come back in lockstep.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 16);
    const delayMs = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      this.#connect();
    }, delayMs);
  }

  #stopTimers(): void {
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
  }
}
