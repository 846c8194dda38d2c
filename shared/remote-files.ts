/**
 * SPEC §3 `remote_files`: files a build asks for by URL, downloaded into PROJECT_DIR before setup.
 *
 * The URLs come from whoever may post a build, and the servers behind them may be hostile, so nothing about a
 * response is trusted: sizes are counted as bytes arrive, redirects are followed by hand (so each target's
 * scheme is checked), and every file has its own time limit. Downloads run in-process, never through a shell
 * or curl, so a URL can never become an argument or a command.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { badRequest, ClusterRunnerError, errorMessage } from './errors.ts';

export interface RemoteFileLimits {
  /** Largest file, in bytes actually received (Content-Length is only used to refuse early). */
  readonly maxBytes: number;
  /** Each file's whole download (connecting, redirects and body), in milliseconds. */
  readonly timeoutMs: number;
  /** Most files one build may ask for. */
  readonly maxFiles: number;
}

/** Stable code of a download that failed (HTTP status, too large, timed out, refused redirect, disk). */
export const REMOTE_FILE_FAILED = 'REMOTE_FILE_FAILED';

/**
 * A plain file name. The first character cannot be `.`, which rules out `.`, `..` and hidden files, and
 * leaves every dot-name free for our temporary files; there is no `/` or `\`, so a name never leaves the
 * folder. 255 is Linux's NAME_MAX.
 */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;
const MAX_URL_LENGTH = 4096;
const MAX_REDIRECTS = 5;
// Enough to overlap a few slow servers without letting one build open hundreds of connections.
const MAX_CONCURRENT_DOWNLOADS = 4;
const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/**
 * Parses the `remote_files` of a build request (or of a message from the master: the worker checks again,
 * since it writes the files). Throws a 400 naming the first bad entry.
 */
export function validateRemoteFiles(files: unknown, limits: Pick<RemoteFileLimits, 'maxFiles'>): Readonly<Record<string, string>> {
  if (!isPlainObject(files)) {
    throw badRequest('"remote_files" must be an object of file name to http(s) URL.');
  }
  const entries = Object.entries(files);
  if (entries.length > limits.maxFiles) {
    throw badRequest(`"remote_files" lists ${entries.length} files; at most ${limits.maxFiles} are allowed.`);
  }
  for (const [name, url] of entries) {
    if (!NAME_PATTERN.test(name)) {
      throw badRequest(`remote_files name ${quote(name)} is not a plain file name (letters, digits, "." "_" "-", not starting with "." "_" or "-").`);
    }
    if (typeof url !== 'string') {
      throw badRequest(`remote_files ${quote(name)}: the URL must be a string.`);
    }
    if (url.length > MAX_URL_LENGTH) {
      throw badRequest(`remote_files ${quote(name)}: the URL is longer than ${MAX_URL_LENGTH} characters.`);
    }
    const parsed = URL.canParse(url) ? new URL(url) : null;
    if (parsed === null) {
      // Not echoed: without a parse there is no telling which part of it is a password.
      throw badRequest(`remote_files ${quote(name)}: the URL is not valid.`);
    }
    if (!isHttp(parsed)) {
      throw badRequest(`remote_files ${quote(name)}: ${quote(parsed.protocol)} URLs are not allowed; use http or https.`);
    }
  }
  return Object.freeze(Object.fromEntries(entries as [string, string][]));
}

/**
 * Downloads each `{ name: url }` into dir/name, streaming to a temporary file in dir and renaming it into
 * place when complete, so dir/name is either absent, as it was, or whole. At most 4 files download at once;
 * the first failure cancels the others and is the one reported.
 *
 * Rejects with a ClusterRunnerError (status 400) that names the file and says what went wrong:
 * REMOTE_FILE_FAILED (HTTP status, too large, timed out, refused redirect, disk), BAD_REQUEST (the files do
 * not pass validateRemoteFiles) or CANCELED (`signal` aborted). No temporary file is left behind; files that
 * completed before the failure stay.
 */
export async function downloadRemoteFiles(
  files: Readonly<Record<string, string>>,
  dir: string,
  limits: RemoteFileLimits,
  signal?: AbortSignal,
): Promise<void> {
  const pending = Object.entries(validateRemoteFiles(files, limits));
  const firstFailure = new AbortController();
  const shared = signal === undefined ? firstFailure.signal : AbortSignal.any([signal, firstFailure.signal]);
  let failure: { readonly error: unknown } | null = null;
  const runDownloads = async (): Promise<void> => {
    for (let next = pending.shift(); next !== undefined && failure === null; next = pending.shift()) {
      const [name, url] = next;
      try {
        await downloadOne(name, url, dir, limits, shared, signal);
      } catch (error) {
        // Later errors are mostly the cancellation this one causes, and would hide the real reason.
        if (failure === null) {
          failure = { error };
          firstFailure.abort();
        }
      }
    }
  };
  // Every runner settles (each cleans up its own temporary file) before the caller hears of a failure.
  await Promise.all(Array.from({ length: Math.min(MAX_CONCURRENT_DOWNLOADS, pending.length) }, runDownloads));
  if (failure !== null) throw (failure as { readonly error: unknown }).error;
}

async function downloadOne(
  name: string,
  url: string,
  dir: string,
  limits: RemoteFileLimits,
  shared: AbortSignal,
  callerSignal: AbortSignal | undefined,
): Promise<void> {
  const fail = (reason: string, cause?: unknown) =>
    new ClusterRunnerError(REMOTE_FILE_FAILED, `Could not download remote_files ${quote(name)} from ${maskUrl(url)}: ${reason}`, { status: 400, cause });
  const timeout = AbortSignal.timeout(limits.timeoutMs);
  // Aborted once this file is done, whatever the outcome, so no response body is left holding a connection.
  const finished = new AbortController();
  const signal = AbortSignal.any([shared, timeout, finished.signal]);
  const temp = join(dir, `.remote-file-${randomBytes(8).toString('hex')}.part`);
  let handle: FileHandle | null = null;
  let isTempCreated = false;
  try {
    const response = await fetchFollowingRedirects(url, signal, fail);
    if (response.status < 200 || response.status > 299) {
      await discardBody(response);
      throw fail(`HTTP ${response.status}${response.statusText === '' ? '' : ` ${response.statusText.slice(0, 100)}`}.`);
    }
    const declaredBytes = Number(response.headers.get('content-length') ?? Number.NaN);
    if (declaredBytes > limits.maxBytes) {
      await discardBody(response);
      throw fail(`the file is larger than ${limits.maxBytes} bytes (Content-Length ${declaredBytes}).`);
    }
    // O_EXCL: never open, and so never write through, something already there (a symbolic link above all).
    handle = await open(temp, 'wx');
    isTempCreated = true;
    let receivedBytes = 0;
    if (response.body !== null) {
      for await (const chunk of response.body) {
        receivedBytes += chunk.byteLength;
        if (receivedBytes > limits.maxBytes) throw fail(`the file is larger than ${limits.maxBytes} bytes.`);
        await handle.write(chunk);
      }
    }
    await handle.close();
    handle = null;
    // rename replaces a symbolic link at dir/name rather than writing where it points.
    await rename(temp, join(dir, name));
    isTempCreated = false;
  } catch (error) {
    if (handle !== null) await handle.close().catch(() => undefined);
    if (isTempCreated) await rm(temp, { force: true }).catch(() => undefined);
    if (error instanceof ClusterRunnerError) throw error;
    if (callerSignal?.aborted === true) {
      throw new ClusterRunnerError('CANCELED', `The download of remote_files ${quote(name)} was canceled.`, { status: 400, cause: callerSignal.reason });
    }
    if (timeout.aborted) throw fail(`timed out after ${limits.timeoutMs} ms.`, error);
    if (shared.aborted) {
      throw new ClusterRunnerError('CANCELED', `The download of remote_files ${quote(name)} was canceled.`, { status: 400, cause: error });
    }
    throw fail(describeFetchError(error), error);
  } finally {
    finished.abort();
  }
}

/**
 * fetch with `redirect: 'manual'`, which in Node returns the 3xx response itself: following by hand lets us
 * refuse a redirect to `file:` and friends and count hops. Credentials in a URL travel as Basic
 * authorization (fetch refuses URLs that carry them), and only to the origin they were written for.
 */
async function fetchFollowingRedirects(
  url: string,
  signal: AbortSignal,
  fail: (reason: string) => ClusterRunnerError,
): Promise<Response> {
  let current = new URL(url);
  let authorization = basicAuthorization(current);
  for (let redirects = 0; ; redirects += 1) {
    const bare = new URL(current);
    bare.username = '';
    bare.password = '';
    const headers: Record<string, string> = {
      // Ask for the bytes as stored: fetch would otherwise unpack a gzip transfer, and an archive served
      // with Content-Encoding gzip would land decompressed.
      'accept-encoding': 'identity',
    };
    if (authorization !== null) headers['authorization'] = authorization;
    const response = await fetch(bare, { redirect: 'manual', signal, headers });
    if (!REDIRECT_STATUSES.has(response.status)) return response;
    await discardBody(response);
    const location = response.headers.get('location');
    if (location === null) throw fail(`HTTP ${response.status} redirect without a Location header.`);
    if (redirects === MAX_REDIRECTS) throw fail(`more than ${MAX_REDIRECTS} redirects.`);
    const next = URL.canParse(location, current.href) ? new URL(location, current) : null;
    if (next === null) throw fail('redirected to an invalid URL.');
    if (!isHttp(next)) throw fail(`redirected to a ${quote(next.protocol)} URL; only http and https are followed.`);
    // Like curl: the user's credentials were meant for one server, not for wherever it sends us.
    authorization = basicAuthorization(next) ?? (next.origin === current.origin ? authorization : null);
    current = next;
  }
}

function basicAuthorization(url: URL): string | null {
  if (url.username === '' && url.password === '') return null;
  const pair = `${decodeUserInfo(url.username)}:${decodeUserInfo(url.password)}`;
  return `Basic ${Buffer.from(pair).toString('base64')}`;
}

/** The URL parser keeps a stray `%` as is, which decodeURIComponent would throw on; such a part is sent raw. */
function decodeUserInfo(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

async function discardBody(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

/** fetch reports every network failure as "fetch failed"; the useful part (ECONNREFUSED, …) is its cause. */
function describeFetchError(error: unknown): string {
  const cause = error instanceof Error ? error.cause : undefined;
  const detail = cause instanceof Error ? cause.message : errorMessage(error);
  return `${detail}.`;
}

/** The URL with any user name and password replaced by `***`: build errors are shown to anyone. */
function maskUrl(url: string): string {
  if (!URL.canParse(url)) return '(an invalid URL)';
  const parsed = new URL(url);
  if (parsed.username === '' && parsed.password === '') return url;
  parsed.username = '***';
  parsed.password = '';
  return parsed.toString();
}

function isHttp(url: URL): boolean {
  return url.protocol === 'http:' || url.protocol === 'https:';
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** JSON-quoted and shortened, so a hostile name cannot forge lines or flood a message. */
function quote(text: string): string {
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text);
}
