/**
 * The part of the master's HTTP API (SPEC §2) the command line uses, typed. Every state-changing request is
 * signed with our signed form (shared/auth.ts); answers are parsed with the contract's schemas
 * (shared/api/views.ts); failures become ClusterRunnerErrors whose message the CLI can print as it is.
 */
import { randomBytes } from 'node:crypto';
import { digestMatches, identityResponse, signRequest } from '../shared/auth.ts';
import { ClusterRunnerError, errorMessage } from '../shared/errors.ts';
import type { z } from 'zod';
import type { BuildRequestBody } from '../shared/api/requests.ts';
import {
  atomAnswerSchema, buildAnswerSchema, buildCanceledSchema, buildCreatedSchema, buildPageSchema, consolePageSchema,
  errorAnswerSchema, queueSchema, retryAnswerSchema, subjobListSchema, workerListSchema, workersShutdownSchema,
  type AtomView, type BuildListPage, type BuildView, type ConsolePage, type RetryAnswer, type SubjobView, type WorkerView,
} from '../shared/api/views.ts';

export { BUILD_STATUSES, isTerminalStatus } from '../shared/api/statuses.ts';
export type { AtomView, BuildListPage, BuildView, ConsolePage, RetryAnswer, SubjobView, WorkerView } from '../shared/api/views.ts';

/** The body of POST /v1/build (SPEC §3). */
export type BuildRequest = BuildRequestBody;

export type ShutdownRequest = { readonly shutdown_all: true } | { readonly workers: readonly number[] };

/** No answer at all: refused connection, unknown host, timeout. */
export const MASTER_UNREACHABLE = 'MASTER_UNREACHABLE';
/** The master answered with an error; `status` is its HTTP status and the message carries its `error`. */
export const MASTER_REFUSED = 'MASTER_REFUSED';
/** The master answered something that is not the API's JSON (another program on that port, say). */
export const MASTER_BAD_ANSWER = 'MASTER_BAD_ANSWER';

export interface MasterClientOptions {
  /** http(s)://host:port, no trailing slash. */
  readonly url: string;
  /** Signs state-changing requests. */
  readonly secret: string;
  /** Time limit of each JSON request; default 30 000 ms. */
  readonly requestTimeoutMs?: number;
}

export class MasterClient {
  readonly url: string;
  readonly #secret: string;
  readonly #requestTimeoutMs: number;

  constructor(options: MasterClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.#secret = options.secret;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /** True when a ClusterRunner master answers GET / within timeoutMs (default 2 000). */
  async isUp(timeoutMs = 2_000): Promise<boolean> {
    try {
      const body = await this.#request('GET', '/', undefined, timeoutMs);
      return typeof body === 'object' && body !== null && (body as { master?: unknown }).master !== undefined;
    } catch {
      return false;
    }
  }

  async createBuild(request: BuildRequest): Promise<number> {
    return (await this.#send('POST', '/v1/build', request, buildCreatedSchema)).build_id;
  }

  async getBuild(buildId: number): Promise<BuildView> {
    return (await this.#get(`/v1/build/${buildId}`, buildAnswerSchema)).build;
  }

  async listSubjobs(buildId: number): Promise<readonly SubjobView[]> {
    return (await this.#get(`/v1/build/${buildId}/subjob`, subjobListSchema)).subjobs;
  }

  async cancelBuild(buildId: number): Promise<void> {
    await this.#send('PUT', `/v1/build/${buildId}`, { status: 'canceled' }, buildCanceledSchema);
  }

  /** The last maxLines complete lines of an atom's console output. */
  async atomConsoleTail(buildId: number, subjobId: number, atomId: number, maxLines: number): Promise<ConsolePage> {
    return this.#get(`/v1/build/${buildId}/subjob/${subjobId}/atom/${atomId}/console?max_lines=${maxLines}`, consolePageSchema);
  }

  async listWorkers(): Promise<readonly WorkerView[]> {
    return (await this.#get('/v1/worker', workerListSchema)).workers;
  }

  /** Returns the ids of the workers now draining. */
  async shutdownWorkers(request: ShutdownRequest): Promise<readonly number[]> {
    return (await this.#send('POST', '/v1/worker/shutdown', request, workersShutdownSchema)).workers;
  }

  /** GET /v1/queue: the builds not yet terminal. */
  async getQueue(): Promise<readonly BuildView[]> {
    return (await this.#get('/v1/queue', queueSchema)).queue;
  }

  /** GET /v2/builds with the SPEC §11 query (values already validated by the caller); the answer as sent. */
  async listBuilds(query: Readonly<Record<string, string>>): Promise<BuildListPage> {
    const search = new URLSearchParams(query).toString();
    return this.#get(`/v2/builds${search === '' ? '' : `?${search}`}`, buildPageSchema);
  }

  /** POST /v1/build/:id/retry (SPEC §10): the failed atoms, or the listed `sid/aid` ones, run again. */
  async retryBuild(buildId: number, atoms: readonly string[]): Promise<RetryAnswer> {
    return this.#send('POST', `/v1/build/${buildId}/retry`, atoms.length > 0 ? { atoms } : {}, retryAnswerSchema);
  }

  /** One page of an atom's console output: maxLines complete lines from offsetLine (SPEC §2.2). */
  async atomConsolePage(buildId: number, subjobId: number, atomId: number, offsetLine: number, maxLines: number): Promise<ConsolePage> {
    return this.#get(`/v1/build/${buildId}/subjob/${subjobId}/atom/${atomId}/console?offset_line=${offsetLine}&max_lines=${maxLines}`, consolePageSchema);
  }

  async getAtom(buildId: number, subjobId: number, atomId: number): Promise<AtomView> {
    return (await this.#get(`/v1/build/${buildId}/subjob/${subjobId}/atom/${atomId}`, atomAnswerSchema)).atom;
  }

  /**
   * Proves that whoever answers at this URL holds our secret (issue 10 item 1): it must return
   * HMAC(secret, challenge) for a random challenge of ours. Resolves true only for a correct answer; a
   * program that does not know the route, or answers wrongly, gets false, and nothing else was sent.
   */
  async provesIdentity(timeoutMs = 2_000): Promise<boolean> {
    const challenge = randomBytes(32).toString('hex');
    try {
      const body = await this.#request('GET', `/v1/identity?challenge=${challenge}`, undefined, timeoutMs) as { identity?: { response?: unknown } } | null;
      const response = body?.identity?.response;
      return typeof response === 'string' && digestMatches(identityResponse(this.#secret, challenge), response);
    } catch {
      return false;
    }
  }

  /**
   * GET artifacts.tar.gz: the response once it is 200 (the caller reads the body). While the master answers
   * 202 (archive not written yet) it asks again every retryMs, for at most waitMs.
   */
  async fetchArtifacts(buildId: number, options: { waitMs: number; retryMs: number }): Promise<Response> {
    const path = `/v1/build/${buildId}/artifacts.tar.gz`;
    const deadline = Date.now() + options.waitMs;
    for (;;) {
      // The time limit covers the answer's head only: the archive itself may take long to arrive.
      const response = await withDeadline(this.#requestTimeoutMs, (signal) => this.#fetch('GET', path, undefined, signal));
      if (response.status === 200) return response;
      if (response.status !== 202) throw await this.#refusal('GET', path, response);
      await response.body?.cancel();
      if (Date.now() >= deadline) {
        throw new ClusterRunnerError(MASTER_REFUSED, `the artifacts of build ${buildId} were still not ready after ${Math.round(options.waitMs / 1000)} s`, { status: 202 });
      }
      await new Promise((resolve) => setTimeout(resolve, options.retryMs));
    }
  }

  async #get<S extends z.ZodType>(path: string, schema: S): Promise<z.output<S>> {
    return this.#answer('GET', path, schema, await this.#request('GET', path, undefined, this.#requestTimeoutMs));
  }

  async #send<S extends z.ZodType>(method: 'POST' | 'PUT', path: string, value: unknown, schema: S): Promise<z.output<S>> {
    return this.#answer(method, path, schema, await this.#request(method, path, JSON.stringify(value), this.#requestTimeoutMs));
  }

  /** The answer checked against the contract: anything else is not the master we expect (another version, another program). */
  #answer<S extends z.ZodType>(method: string, path: string, schema: S, body: unknown): z.output<S> {
    const parsed = schema.safeParse(body);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0]!;
    throw new ClusterRunnerError(MASTER_BAD_ANSWER,
      `${this.url} answered ${method} ${path} with JSON the API does not describe ("${issue.path.join('.')}": ${issue.message}); is it a ClusterRunner master of this version?`,
      { status: 502 });
  }

  /** One JSON request, answer read in full, within timeoutMs. */
  #request(method: string, path: string, body: string | undefined, timeoutMs: number): Promise<unknown> {
    return withDeadline(timeoutMs, async (signal) => this.#json(method, path, await this.#fetch(method, path, body, signal)));
  }

  async #fetch(method: string, path: string, body: string | undefined, signal: AbortSignal): Promise<Response> {
    // Reads are signed too: a master with authenticate_reads = true refuses them otherwise, and one without
    // ignores the headers. The master checks the path it routes, which is the API path without our base.
    const headers: Record<string, string> = signRequest(this.#secret, method, path, body ?? '');
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    try {
      return await fetch(`${this.url}${path}`, { method, body, headers, signal, redirect: 'manual' });
    } catch (error) {
      throw this.#unreachable(error, signal);
    }
  }

  #unreachable(error: unknown, signal: AbortSignal): ClusterRunnerError {
    const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : '';
    const what = signal.aborted ? 'no answer in time' : `${errorMessage(error)}${cause}`;
    return new ClusterRunnerError(MASTER_UNREACHABLE, `cannot reach the master at ${this.url} (${what})`, { status: 503, cause: error });
  }

  async #json(method: string, path: string, response: Response): Promise<unknown> {
    if (response.status < 200 || response.status >= 300) throw await this.#refusal(method, path, response);
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      throw new ClusterRunnerError(MASTER_UNREACHABLE, `the master at ${this.url} hung up in the middle of its answer to ${method} ${path} (${errorMessage(error)})`, {
        status: 503,
        cause: error,
      });
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw new ClusterRunnerError(MASTER_BAD_ANSWER, `${this.url} answered ${method} ${path} with something that is not JSON; is it a ClusterRunner master?`, {
        status: 502,
        cause: error,
      });
    }
  }

  async #refusal(method: string, path: string, response: Response): Promise<ClusterRunnerError> {
    const text = await response.text().catch(() => '');
    let reason = text.slice(0, 500);
    try {
      // Only `error` is read: a master older than the error codes sends no `code`.
      const answer = errorAnswerSchema.pick({ error: true }).safeParse(JSON.parse(text));
      if (answer.success) reason = answer.data.error;
    } catch {
      // Not our JSON: the raw text (cut short) still tells the user something.
    }
    return new ClusterRunnerError(MASTER_REFUSED, `the master refused ${method} ${path} (HTTP ${response.status}): ${reason || response.statusText}`, {
      status: response.status,
    });
  }
}

export function isUnreachable(error: unknown): boolean {
  return error instanceof ClusterRunnerError && error.code === MASTER_UNREACHABLE;
}

/** 401: the digest did not match, which for our signed requests means the secrets differ. */
export function isAuthenticationRefusal(error: unknown): boolean {
  return error instanceof ClusterRunnerError && error.code === MASTER_REFUSED && error.status === 401;
}

/**
 * Runs fn with a signal aborted after ms. The timer is deliberately ref'd (AbortSignal.timeout's is not):
 * when the peer hangs up at once after accepting, Node 20's fetch can stay pending with no handle left open,
 * and the process would exit with the request never settled (exit code 13, nothing printed).
 */
async function withDeadline<T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`no answer within ${ms} ms`)), ms);
  try {
    return await fn(controller.signal);
  } finally {
    clearTimeout(timer);
  }
}
