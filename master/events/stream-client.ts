import type { Response } from 'express';
import type { EventRecord } from '../store/event-store.ts';
import { StatusMemory } from './build-status-events.ts';
import type { StreamFilter } from './stream-filter.ts';

/** One frame of the stream; console chunks have no id (they are not in the log and cannot be resumed). */
export interface ConsoleChunk {
  readonly build_id: number;
  readonly subjob_id: number;
  readonly atom_id: number;
  /** Byte offset of `data` in the atom's console output. */
  readonly offset: number;
  readonly data: string;
}

function frame(id: number | null, event: string, data: unknown): string {
  // JSON never holds a raw newline, so one data line is always enough.
  return `${id === null ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/**
 * One open GET /v2/events response. It replays the log from the client's last id, then goes live; it writes
 * only while the socket keeps up and drops a client whose unsent bytes pass the limit, so a reader that
 * stops reading costs at most that much memory.
 */
export class StreamClient {
  readonly filter: StreamFilter;
  readonly address: string;
  readonly #res: Response;
  readonly #maxBufferedBytes: number;
  readonly #statuses = new StatusMemory();
  readonly #onEnd: (client: StreamClient) => void;
  /** The id of the last log event this client has been given (or skipped by its filter). */
  lastId: number;
  isLive = false;
  isClosed = false;

  constructor(options: { res: Response; filter: StreamFilter; address: string; startId: number; maxBufferedBytes: number; onEnd: (client: StreamClient) => void }) {
    this.#res = options.res;
    this.filter = options.filter;
    this.address = options.address;
    this.lastId = options.startId;
    this.#maxBufferedBytes = options.maxBufferedBytes;
    this.#onEnd = options.onEnd;
    this.#res.on('close', () => this.#ended());
  }

  /** False when the socket's buffer is full: the replay waits for 'drain' before the next page. */
  get isWritable(): boolean {
    return !this.isClosed && this.#res.writableLength < this.#maxBufferedBytes;
  }

  /** Sends a log event (and the status change it implies) if it is new to this client and passes the filter. */
  sendEvent(event: EventRecord): void {
    if (this.isClosed || event.__id__ <= this.lastId) return;
    this.lastId = event.__id__;
    const { buildId, tags } = this.filter;
    if (buildId !== null && event['build_id'] !== buildId) return;
    if (tags === null || tags.has(event.__tag__)) this.#write(frame(event.__id__, event.__tag__, event));
    const status = this.#statuses.change(event);
    if (status && (tags === null || tags.has('BUILD_STATUS'))) this.#write(frame(event.__id__, 'BUILD_STATUS', status));
  }

  sendConsole(chunk: ConsoleChunk): void {
    if (this.isClosed || !this.isLive) return;
    if (this.filter.tags === null || this.filter.tags.has('CONSOLE')) this.#write(frame(null, 'CONSOLE', chunk));
  }

  /** A comment line: keeps proxies from closing a quiet stream (SPEC §14: every 15 s). */
  keepAlive(): void {
    if (!this.isClosed) this.#write(': keep-alive\n\n');
  }

  /** Resolves when the socket has room again, or the client is gone. */
  async waitForRoom(timeoutMs: number): Promise<boolean> {
    if (this.isWritable) return true;
    return await new Promise<boolean>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#res.off('drain', done);
        this.#res.off('close', done);
        resolve(this.isWritable);
      };
      const timer = setTimeout(done, timeoutMs);
      this.#res.on('drain', done);
      this.#res.on('close', done);
    });
  }

  /** Ends the stream with a last event saying why, so a client can tell a drop from an end and resume. */
  drop(reason: string): void {
    if (this.isClosed) return;
    this.#res.write(frame(null, 'STREAM_CLOSED', { reason, last_event_id: this.lastId }));
    this.#res.end();
    // A reader that never reads never lets the end through either: let go of the socket after a grace.
    const socket = this.#res.socket;
    setTimeout(() => socket?.destroy(), 5_000).unref();
    this.#ended();
  }

  #write(text: string): void {
    this.#res.write(text);
    // Past the limit the client is not keeping up; buffering more for it would let one reader grow the
    // master without bound.
    if (this.isLive && this.#res.writableLength > this.#maxBufferedBytes) this.drop('slow_reader');
  }

  #ended(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.#onEnd(this);
  }
}
