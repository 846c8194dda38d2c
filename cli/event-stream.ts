/**
 * `clusterrunner build` follows its build through the master's event stream (GET /v2/events, SPEC §14)
 * instead of asking for the build every 300 ms: status changes and atom results arrive as they happen.
 * When the master goes away (a restart, a crash) it says so, keeps trying for a documented time
 * (FOLLOW_GIVE_UP_SECONDS, README "Riding out a master restart"), resumes with Last-Event-ID so no atom
 * result is missed or counted twice, and in local mode starts the local master again itself. A master
 * without /v2/events (an older one) answers 404: the caller falls back to polling (cli/follow-build.ts).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { signRequest } from '../shared/auth.ts';
import { ClusterRunnerError, errorMessage } from '../shared/errors.ts';
import type { CommandOutput } from './command-output.ts';
import { usageError } from './exit-codes.ts';
import { isTerminalStatus, isUnreachable, type BuildView, type MasterClient } from './master-client.ts';
import { createProgressReporter, timestamp } from './progress.ts';
import { neutraliseLine } from './terminal-text.ts';

/** How long the build may be out of reach before `build` gives up, by default (README documents it). */
export const DEFAULT_GIVE_UP_SECONDS = 300;
/** Overrides DEFAULT_GIVE_UP_SECONDS: a whole number of seconds, 1 to 86 400. */
export const GIVE_UP_ENV = 'CLUSTERRUNNER_FOLLOW_GIVE_UP_SECONDS';
/** Local mode: how long the local master may stay down before we start it again (someone may be restarting it). */
const LOCAL_RESTART_AFTER_MS = 3_000;
/** The master sends a keep-alive comment every 15 s: a stream silent for longer hangs on a dead peer. */
const SILENT_STREAM_MS = 40_000;
/** Between two reconnection attempts: grows from the first to the last. */
const RETRY_MS = [250, 500, 1_000, 2_000] as const;
/** Atoms printed as they fail; past this, the end report lists them. */
const MAX_LIVE_FAILURES = 200;
/** One SSE frame may not grow past this (the master's largest are console chunks of a few KiB). */
const MAX_FRAME_CHARS = 4 * 1024 * 1024;

export function giveUpSeconds(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[GIVE_UP_ENV];
  if (raw === undefined || raw === '') return DEFAULT_GIVE_UP_SECONDS;
  if (!/^\d{1,5}$/.test(raw.trim()) || Number(raw) < 1 || Number(raw) > 86_400) {
    throw usageError(`${GIVE_UP_ENV} must be a whole number of seconds from 1 to 86400, not ${JSON.stringify(raw.slice(0, 40))}`);
  }
  return Number(raw);
}

export interface SseFrame {
  readonly id: number | null;
  readonly event: string;
  readonly data: string;
}

/** Cuts text/event-stream bytes into frames (comments and `retry:` skipped); bounded per frame. */
export class SseParser {
  #buffer = '';

  push(text: string): SseFrame[] {
    this.#buffer += text;
    const frames: SseFrame[] = [];
    for (;;) {
      const match = /\r?\n\r?\n/.exec(this.#buffer);
      if (match === null) break;
      const block = this.#buffer.slice(0, match.index);
      this.#buffer = this.#buffer.slice(match.index + match[0].length);
      let id: number | null = null;
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        const colon = line.indexOf(':');
        if (colon === 0) continue;
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'id' && /^\d{1,15}$/.test(value)) id = Number(value);
        else if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
      }
      if (data.length > 0) frames.push({ id, event, data: data.join('\n') });
    }
    if (this.#buffer.length > MAX_FRAME_CHARS) throw new Error(`an event of the stream is over ${MAX_FRAME_CHARS} characters`);
    return frames;
  }
}

export type StreamFollowEnd =
  /** The build is terminal: the caller fetches and reports it. */
  | { readonly kind: 'terminal' }
  /** The first signal came: the caller cancels the build as usual. */
  | { readonly kind: 'interrupted' }
  /** The master has no event stream (older than SPEC §14): the caller polls. */
  | { readonly kind: 'unsupported' }
  /** The build could not be followed (out of reach too long, refused): message says why and what to look at. */
  | { readonly kind: 'lost'; readonly message: string };

export interface StreamFollowOptions {
  readonly client: MasterClient;
  readonly secret: string;
  readonly buildId: number;
  readonly out: CommandOutput;
  readonly interrupt: AbortSignal;
  readonly isQuiet: boolean;
  readonly giveUpMs: number;
  /** Where the master writes its log, named when we give up; null when it is on another machine. */
  readonly masterLog: string | null;
  /** Local mode: starts the local master (and worker) again; null when the master is not ours to start. */
  readonly restartMaster: ((signal: AbortSignal) => Promise<void>) | null;
}

/** What the stream has told us about the build so far. */
class BuildWatch {
  status = 'QUEUED';
  total: number | null = null;
  readonly finished = new Map<string, number>();
  readonly running = new Set<string>();
  readonly reported = new Set<string>();
  buildingSince: number | null = null;

  get failed(): number {
    let count = 0;
    for (const exitCode of this.finished.values()) if (exitCode !== 0) count++;
    return count;
  }

  take(build: BuildView): void {
    this.status = build.status;
    this.total = build.num_atoms;
  }
}

interface EventPayload {
  readonly build_id?: unknown;
  readonly status?: unknown;
  readonly subjob_id?: unknown;
  readonly atom_id?: unknown;
  readonly exit_code?: unknown;
  readonly reason?: unknown;
}

/** Follows the build until it is terminal, the user interrupts, or it cannot be followed any more. */
export async function followBuildEvents(options: StreamFollowOptions): Promise<StreamFollowEnd> {
  const { client, buildId, out, interrupt } = options;
  const stream = out.isJson ? process.stderr : process.stdout;
  const progress = createProgressReporter({ stream, isTty: stream.isTTY === true });
  const say = (line: string) => {
    progress.clear();
    out.info(stream.isTTY === true ? line : `${timestamp()} ${line}`);
  };
  const watch = new BuildWatch();
  let lastEventId: number | null = null;
  let outageSince: number | null = null;
  let lastRestartAt = 0;
  let attempt = 0;

  const show = () => {
    if (options.isQuiet) return;
    if (watch.status === 'BUILDING') watch.buildingSince ??= Date.now();
    const done = watch.finished.size;
    const total = watch.total;
    let etaSeconds: number | null = null;
    if (watch.buildingSince !== null && total !== null && done > 0 && done < total) {
      etaSeconds = ((Date.now() - watch.buildingSince) / done) * (total - done) / 1000;
    }
    progress.update({
      buildId, status: watch.status, atomsTotal: total, atomsDone: total === null ? null : done,
      atomsFailed: watch.failed, atomsRunning: watch.running.size, etaSeconds,
    });
  };

  for (;;) {
    if (interrupt.aborted) {
      progress.clear();
      return { kind: 'interrupted' };
    }
    const connection = new AbortController();
    const onInterrupt = () => connection.abort();
    interrupt.addEventListener('abort', onInterrupt, { once: true });
    let silence: NodeJS.Timeout | null = null;
    const armSilence = () => {
      if (silence) clearTimeout(silence);
      silence = setTimeout(() => connection.abort(new Error(`the event stream was silent for ${SILENT_STREAM_MS / 1000} s`)), SILENT_STREAM_MS);
    };
    try {
      armSilence();
      const response = await openStream(options, lastEventId, connection.signal);
      if (response.status === 404 || response.status === 405) {
        await response.body?.cancel();
        progress.clear();
        return { kind: 'unsupported' };
      }
      if (response.status === 401 || response.status === 403) {
        await response.body?.cancel();
        progress.clear();
        return { kind: 'lost', message: `the master refused the event stream of build ${buildId} (HTTP ${response.status}): does it hold the secret of this conf file?` };
      }
      if (!response.ok || response.body === null) {
        await response.body?.cancel();
        // 429/503: too many streams or shutting down; like an outage, try again shortly.
        throw new Error(`the event stream answered HTTP ${response.status}`);
      }
      if (outageSince !== null) say(`the master at ${client.url} is back after ${Math.round((Date.now() - outageSince) / 1000)} s; following build ${buildId} again`);
      outageSince = null;
      attempt = 0;
      // The stream carries what happens from now on (or since lastEventId): what happened before it
      // opened comes from one read of the build.
      const build = await client.getBuild(buildId);
      watch.take(build);
      if (isTerminalStatus(build.status)) {
        await response.body.cancel();
        progress.clear();
        return { kind: 'terminal' };
      }
      if (lastEventId === null && build.status === 'BUILDING' && (build.num_atoms ?? 0) > 0) {
        for (const subjob of await client.listSubjobs(buildId)) {
          for (const atom of subjob.atoms) {
            const key = `${atom.subjob_id}/${atom.id}`;
            if (atom.state === 'COMPLETED' && atom.exit_code !== null) {
              watch.finished.set(key, atom.exit_code);
              // Failed before the stream opened: said now, as it would have been had the stream been there.
              reportFailure(key, atom.exit_code, atom.command_string);
            } else if (atom.state === 'IN_PROGRESS') watch.running.add(key);
          }
        }
      }
      show();
      const parser = new SseParser();
      const decoder = new TextDecoder();
      let closedBy: string | null = null;
      for await (const chunk of response.body) {
        armSilence();
        for (const frame of parser.push(decoder.decode(chunk, { stream: true }))) {
          if (frame.id !== null) lastEventId = frame.id;
          const payload = parsePayload(frame.data);
          if (frame.event === 'STREAM_CLOSED') {
            closedBy = typeof payload.reason === 'string' ? payload.reason : 'unknown';
            continue;
          }
          if (payload.build_id !== buildId) continue;
          const outcome = await apply(frame.event, payload);
          if (outcome === 'terminal') {
            // Leaving the loop cancels the body, which closes the connection (aborting first would make
            // that cancel throw).
            progress.clear();
            return { kind: 'terminal' };
          }
        }
        show();
      }
      throw new Error(closedBy === null ? 'the master closed the event stream' : `the master closed the event stream (${closedBy})`);
    } catch (error) {
      if (interrupt.aborted) {
        progress.clear();
        return { kind: 'interrupted' };
      }
      if (error instanceof ClusterRunnerError && !isUnreachable(error)) {
        progress.clear();
        return { kind: 'lost', message: `lost track of build ${buildId}: ${errorMessage(error)}` };
      }
      const reason = connection.signal.aborted && connection.signal.reason instanceof Error ? connection.signal.reason.message : describeFailure(error);
      const now = Date.now();
      if (outageSince === null) {
        outageSince = now;
        say(`lost the master at ${client.url} (${reason}); build ${buildId} goes on without us: waiting up to ${Math.round(options.giveUpMs / 1000)} s for the master to come back` +
          `${options.restartMaster === null ? '' : ', starting the local master again if it stays down'}…`);
      }
      if (now - outageSince > options.giveUpMs) {
        progress.clear();
        const log = options.masterLog === null ? 'the master\'s log on its machine' : `the master's log ${options.masterLog}`;
        return {
          kind: 'lost',
          message: `the master at ${client.url} has been out of reach for over ${Math.round(options.giveUpMs / 1000)} s (${reason}); giving up on build ${buildId}. ` +
            `See ${log}; the build may still finish: \`clusterrunner attach ${buildId}\` follows it again.`,
        };
      }
      if (options.restartMaster !== null && now - outageSince >= LOCAL_RESTART_AFTER_MS && now - lastRestartAt > 30_000 && !(await client.isUp())) {
        lastRestartAt = now;
        say(`the local master is still down: starting it again (log ${options.masterLog ?? 'in the base directory'})`);
        try {
          await options.restartMaster(interrupt);
        } catch (restartError) {
          if (!interrupt.aborted) say(`could not start the local master again: ${errorMessage(restartError)}`);
        }
      }
      await sleep(RETRY_MS[Math.min(attempt++, RETRY_MS.length - 1)]!, undefined, { signal: interrupt }).catch(() => undefined);
    } finally {
      if (silence) clearTimeout(silence);
      interrupt.removeEventListener('abort', onInterrupt);
    }
  }

  async function apply(event: string, payload: EventPayload): Promise<'terminal' | null> {
    const key = `${String(payload.subjob_id)}/${String(payload.atom_id)}`;
    switch (event) {
      case 'BUILD_STATUS': {
        if (typeof payload.status !== 'string') return null;
        watch.status = payload.status;
        if (isTerminalStatus(payload.status)) return 'terminal';
        // The atoms are known once preparation is done.
        if (payload.status === 'BUILDING' && watch.total === null) watch.take(await client.getBuild(buildId));
        return null;
      }
      case 'ATOM_START':
        watch.running.add(key);
        return null;
      case 'ATOM_FINISH': {
        watch.running.delete(key);
        const exitCode = typeof payload.exit_code === 'number' ? payload.exit_code : 0;
        watch.finished.set(key, exitCode);
        if (isToReport(key, exitCode)) {
          let command = '';
          try {
            command = (await client.getAtom(buildId, Number(payload.subjob_id), Number(payload.atom_id))).command_string;
          } catch {
            // The name is a nicety; the end report shows the atom's output anyway.
          }
          reportFailure(key, exitCode, command);
        }
        return null;
      }
      default:
        return null;
    }
  }

  /** Each failed atom once, the first MAX_LIVE_FAILURES of them. */
  function isToReport(key: string, exitCode: number): boolean {
    return exitCode !== 0 && !watch.reported.has(key) && watch.reported.size < MAX_LIVE_FAILURES;
  }

  function reportFailure(key: string, exitCode: number, command: string): void {
    if (!isToReport(key, exitCode)) return;
    watch.reported.add(key);
    say(`FAILED atom ${key} (exit code ${exitCode})${command === '' ? '' : `: ${neutraliseLine(command)}`}`);
  }
}

async function openStream(options: StreamFollowOptions, lastEventId: number | null, signal: AbortSignal): Promise<Response> {
  const path = `/v2/events?build_id=${options.buildId}`;
  const headers: Record<string, string> = { ...signRequest(options.secret, 'GET', path), Accept: 'text/event-stream' };
  if (lastEventId !== null) headers['Last-Event-ID'] = String(lastEventId);
  return await fetch(`${options.client.url}${path}`, { headers, signal, redirect: 'manual' });
}

function parsePayload(data: string): EventPayload {
  try {
    const value: unknown = JSON.parse(data);
    return typeof value === 'object' && value !== null ? value as EventPayload : {};
  } catch {
    return {};
  }
}

/** `connect ECONNREFUSED 127.0.0.1:4000` rather than fetch's bare "fetch failed". */
function describeFailure(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${errorMessage(error)}${cause}`;
}
