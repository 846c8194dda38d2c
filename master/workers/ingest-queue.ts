import type { WebSocket } from 'ws';

/** How long one step of handling worker messages may run before the loop serves everything else. */
export const INGEST_STEP_MS = 2;
/** Queued messages past which the sockets adding more are paused; they resume below the low mark. */
export const INGEST_HIGH_WATER = 4000;
export const INGEST_LOW_WATER = 1000;

/**
 * Worker messages wait here and are handled in steps of a few milliseconds, each step its own turn of the
 * event loop. A socket's buffered frames are otherwise all handled in the turn that reads them: with hundreds
 * of workers streaming results one turn ran for hundreds of milliseconds, and a status GET waited behind it
 * (issue 18: p99 521 ms while 200 workers streamed). Now a request waits for one step at most. A step's time
 * includes what its messages continue after an await (a lease's next message, its files closed).
 *
 * Bounded: past the high mark each socket that adds a message is paused, so the workers' results wait in TCP
 * (their own send buffers) until the queue is down to the low mark. One FIFO for every socket keeps each
 * connection's messages, and its close, in the order they came.
 */
export class IngestQueue {
  #items: { socket: WebSocket; handle: () => void }[] = [];
  #head = 0;
  readonly #paused = new Set<WebSocket>();
  #scheduled: NodeJS.Immediate | null = null;
  #isClosed = false;

  /** A handler that throws: reported here (the caller logs it); the queue goes on with the next message. */
  readonly #onError: (error: unknown) => void;
  readonly stepMs: number;
  readonly highWater: number;
  readonly lowWater: number;

  constructor(onError: (error: unknown) => void, stepMs = INGEST_STEP_MS, highWater = INGEST_HIGH_WATER, lowWater = INGEST_LOW_WATER) {
    this.#onError = onError;
    this.stepMs = stepMs;
    this.highWater = highWater;
    this.lowWater = lowWater;
  }

  get length(): number {
    return this.#items.length - this.#head;
  }

  get pausedSockets(): number {
    return this.#paused.size;
  }

  /** handle runs in a later step, after everything queued before it. */
  push(socket: WebSocket, handle: () => void): void {
    if (this.#isClosed) return;
    this.#items.push({ socket, handle });
    if (this.length > this.highWater && !this.#paused.has(socket)) {
      this.#paused.add(socket);
      socket.pause();
    }
    this.#scheduled ??= setImmediate(() => this.#step());
  }

  /** Drops what is queued (the master is closing: nobody is left to handle it). */
  close(): void {
    this.#isClosed = true;
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = null;
    this.#items = [];
    this.#head = 0;
    this.#paused.clear();
  }

  #step(): void {
    this.#scheduled = null;
    // A push from inside a step schedules one more, which may find the queue already drained.
    if (this.length === 0) return;
    void this.#run(performance.now() + this.stepMs);
  }

  async #run(deadline: number): Promise<void> {
    // At least one message per step, so a slow handler cannot stall the queue.
    do {
      const item = this.#items[this.#head]!;
      this.#items[this.#head++] = undefined as never;
      try {
        item.handle();
      } catch (error) {
        this.#onError(error);
      }
      // What a message set going (the lease's next step after an await, its files closed) runs here, so the
      // step's time counts it: run after the step, it was most of a turn's work, and the turn ran for tens of
      // ms with only 2 of them budgeted (issue 18). Only resolved promises are awaited: the step still ends
      // in the turn it began, before any other I/O is handled.
      await Promise.resolve();
    } while (this.#head < this.#items.length && performance.now() < deadline && !this.#isClosed);
    if (this.#isClosed) return;
    // Compact now and then rather than shift() per message (O(n) each on a long queue).
    if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    if (this.#paused.size > 0 && this.length <= this.lowWater) {
      for (const socket of this.#paused) socket.resume();
      this.#paused.clear();
    }
    if (this.length > 0) this.#scheduled ??= setImmediate(() => this.#step());
  }
}
