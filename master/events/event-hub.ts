import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Request, Response } from 'express';
import { ClusterRunnerError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/log.ts';
import type { Store } from '../store/index.ts';
import { EVENT_TAGS, type EventRecord } from '../store/event-store.ts';
import { STATUS_CHANGING_TAGS } from './build-status-events.ts';
import type { ResultsLayout } from '../builds/results-layout.ts';
import { StreamClient } from './stream-client.ts';
import { BuildConsoleTail } from './console-tail.ts';
import type { StreamFilter } from './stream-filter.ts';

export interface EventHubLimits {
  /** Open streams in all (default 256). */
  readonly maxStreams: number;
  /** Open streams from one client address (default 8). */
  readonly maxStreamsPerAddress: number;
  /** Unsent bytes one stream may hold before its reader is dropped as too slow (default 1 MiB). */
  readonly maxBufferedBytes: number;
  /** Between keep-alive comments, ms (SPEC §14: 15 s). */
  readonly keepAliveMs: number;
  /** Between reads of running atoms' console files, ms (default 250). */
  readonly consoleIntervalMs: number;
  /** How long a replay waits for a reader to take what was sent, ms (default 30 s). */
  readonly replayStallMs: number;
}

/** Events a replay reads and sends per turn of the event loop. */
export const REPLAY_PAGE_EVENTS = 1000;

/** What a client's filter lets SQLite leave out: other builds' events, and tags that send nothing (a BUILD_STATUS comes from STATUS_CHANGING_TAGS). */
export function replayQuery(filter: StreamFilter): { buildId?: number; tags?: readonly string[] } {
  const tags = filter.tags === null ? undefined : [...new Set([
    ...[...filter.tags].filter((tag) => (EVENT_TAGS as readonly string[]).includes(tag)),
    ...(filter.tags.has('BUILD_STATUS') ? STATUS_CHANGING_TAGS : []),
  ])];
  return { ...(filter.buildId === null ? {} : { buildId: filter.buildId }), ...(tags === undefined ? {} : { tags }) };
}

export const DEFAULT_EVENT_HUB_LIMITS: EventHubLimits = {
  maxStreams: 256, maxStreamsPerAddress: 8, maxBufferedBytes: 1024 * 1024, keepAliveMs: 15_000, consoleIntervalMs: 250, replayStallMs: 30_000,
};

/**
 * Fans the event log out to GET /v2/events streams (SPEC §14). New events come from the store's onAppend
 * hook and go out on the next turn of the event loop, once their batch is committed; a client that
 * resumes first replays the log from SQLite, then goes live, with per-client ids guarding against a gap or
 * a duplicate at the switch. Idle (no timers, nothing kept) while nobody listens.
 */
export class EventHub {
  readonly #store: Store;
  readonly #layout: ResultsLayout;
  readonly #log: Logger;
  readonly #limits: EventHubLimits;
  readonly #clients = new Set<StreamClient>();
  readonly #perAddress = new Map<string, number>();
  readonly #tails = new Map<number, BuildConsoleTail>();
  #pending: EventRecord[] = [];
  #flushScheduled: NodeJS.Immediate | null = null;
  #keepAliveTimer: NodeJS.Timeout | null = null;
  #consoleTimer: NodeJS.Timeout | null = null;
  #stopListening: (() => void) | null = null;
  #isClosed = false;

  constructor(deps: { store: Store; layout: ResultsLayout; log: Logger; limits?: Partial<EventHubLimits> }) {
    this.#store = deps.store;
    this.#layout = deps.layout;
    this.#log = deps.log;
    this.#limits = { ...DEFAULT_EVENT_HUB_LIMITS, ...deps.limits };
  }

  get streamCount(): number {
    return this.#clients.size;
  }

  /** Starts a stream on this response, or throws 429/503 when the address or the master has too many. */
  open(req: Request, res: Response, filter: StreamFilter): void {
    if (this.#isClosed) throw new ClusterRunnerError('UNAVAILABLE', 'The master is shutting down.', { status: 503 });
    const address = req.socket.remoteAddress ?? 'unknown';
    if ((this.#perAddress.get(address) ?? 0) >= this.#limits.maxStreamsPerAddress) {
      throw new ClusterRunnerError('TOO_MANY_STREAMS', `Too many event streams from ${address} (at most ${this.#limits.maxStreamsPerAddress}); close one first.`, { status: 429 });
    }
    if (this.#clients.size >= this.#limits.maxStreams) {
      throw new ClusterRunnerError('TOO_MANY_STREAMS', `The master serves at most ${this.#limits.maxStreams} event streams; try again later.`, { status: 503 });
    }
    res.status(200).set({
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    req.socket.setNoDelay(true);
    // A stream lives until the client leaves: the request timeouts are for requests, not for this.
    req.socket.setTimeout(0);
    res.write(`retry: 2000\n\n`);

    const client = new StreamClient({
      res, filter, address, startId: filter.sinceId ?? Number.MAX_SAFE_INTEGER, maxBufferedBytes: this.#limits.maxBufferedBytes,
      onEnd: (ended) => this.#remove(ended),
    });
    this.#clients.add(client);
    this.#perAddress.set(address, (this.#perAddress.get(address) ?? 0) + 1);
    this.#stopListening ??= this.#store.events.onAppend((event) => this.#take(event));
    this.#keepAliveTimer ??= setInterval(() => {
      for (const each of this.#clients) each.keepAlive();
    }, this.#limits.keepAliveMs).unref();
    this.#start(client).catch((error: unknown) => {
      this.#log.warn({ err: error }, 'event stream failed');
      client.drop('internal_error');
    });
  }

  async #start(client: StreamClient): Promise<void> {
    // Without a resume point the client wants only what comes next: live dispatch carries nothing older,
    // so there is no need to look up where the log ends (a scan on a long history).
    if (client.filter.sinceId === null) client.lastId = 0;
    else await this.#replay(client);
    if (client.isClosed) return;
    client.isLive = true;
    if (client.filter.withConsole && client.filter.buildId !== null) await this.#watchConsole(client, client.filter.buildId);
  }

  /**
   * Sends the log after the client's id, a page at a time, as fast as the client reads: the socket's buffer
   * never holds much more than the per-client limit. SQLite filters by build and tag, and the loop turns
   * between pages: a replay of a long log once read all of it in one turn, held the master for as long (a
   * stream of one build from since_id=0 held it 123 ms after a single build of 10,000 atoms; issue 18). The
   * last (empty) read and the switch to live happen in the same turn of the event loop, so nothing committed
   * in between is missed.
   */
  async #replay(client: StreamClient): Promise<void> {
    const query = replayQuery(client.filter);
    for (;;) {
      if (client.isClosed) return;
      const page = this.#store.events.list({ ...query, sinceId: client.lastId, limit: REPLAY_PAGE_EVENTS });
      if (page.length === 0) return;
      for (const event of page) {
        client.sendEvent(event);
        if (!client.isWritable && !(await client.waitForRoom(this.#limits.replayStallMs))) {
          client.drop('slow_reader');
          return;
        }
      }
      await nextTurn();
    }
  }

  #take(event: EventRecord): void {
    if (this.#clients.size === 0) return;
    this.#pending.push(event);
    this.#flushScheduled ??= setImmediate(() => this.#dispatch());
  }

  /** Runs after the batch that wrote these events has committed. */
  #dispatch(): void {
    this.#flushScheduled = null;
    const events = this.#pending;
    this.#pending = [];
    for (const event of events) {
      for (const client of this.#clients) {
        if (client.isLive) client.sendEvent(event);
      }
      this.#followConsole(event);
    }
  }

  #followConsole(event: EventRecord): void {
    const buildId = event['build_id'];
    if (typeof buildId !== 'number') return;
    const tail = this.#tails.get(buildId);
    const subjobId = event['subjob_id'];
    const atomId = event['atom_id'];
    if (!tail || typeof subjobId !== 'number' || typeof atomId !== 'number') return;
    if (event.__tag__ === 'ATOM_START') tail.follow(subjobId, atomId, true).catch(() => undefined);
    else if (event.__tag__ === 'ATOM_FINISH') tail.finish(subjobId, atomId);
  }

  async #watchConsole(client: StreamClient, buildId: number): Promise<void> {
    let tail = this.#tails.get(buildId);
    if (!tail) {
      tail = new BuildConsoleTail(buildId, this.#layout);
      this.#tails.set(buildId, tail);
      for (const atom of this.#store.atoms.listInProgressAtoms(buildId)) await tail.follow(atom.subjobId, atom.id, false);
    }
    for (const chunk of await tail.tails()) client.sendConsole(chunk);
    this.#consoleTimer ??= setInterval(() => {
      this.#pollConsoles().catch((error: unknown) => this.#log.warn({ err: error }, 'reading console output for the event stream failed'));
    }, this.#limits.consoleIntervalMs).unref();
  }

  async #pollConsoles(): Promise<void> {
    for (const tail of this.#tails.values()) {
      const chunks = await tail.poll();
      for (const chunk of chunks) {
        for (const client of this.#clients) {
          if (client.filter.withConsole && client.filter.buildId === tail.buildId) client.sendConsole(chunk);
        }
      }
    }
  }

  #remove(client: StreamClient): void {
    if (!this.#clients.delete(client)) return;
    const count = (this.#perAddress.get(client.address) ?? 1) - 1;
    if (count <= 0) this.#perAddress.delete(client.address);
    else this.#perAddress.set(client.address, count);
    const buildId = client.filter.buildId;
    if (client.filter.withConsole && buildId !== null && ![...this.#clients].some((c) => c.filter.withConsole && c.filter.buildId === buildId)) {
      this.#tails.delete(buildId);
    }
    if (this.#tails.size === 0 && this.#consoleTimer) {
      clearInterval(this.#consoleTimer);
      this.#consoleTimer = null;
    }
    if (this.#clients.size === 0) this.#idle();
  }

  #idle(): void {
    this.#stopListening?.();
    this.#stopListening = null;
    if (this.#keepAliveTimer) clearInterval(this.#keepAliveTimer);
    this.#keepAliveTimer = null;
    if (this.#flushScheduled) clearImmediate(this.#flushScheduled);
    this.#flushScheduled = null;
    this.#pending = [];
  }

  /** Ends every stream with a last event; idempotent. */
  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    for (const client of [...this.#clients]) client.drop('master_shutdown');
    this.#idle();
  }
}
