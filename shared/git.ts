/**
 * Git projects: the checks on the user's `url`, `branch`, `hash` and `remote` (SPEC §3), and a cache of bare
 * mirrors that builds are fetched into and checked out from.
 *
 * These values come from anyone who can post a build, and git has a long history of turning such values into
 * commands (`ext::sh -c …`, `--upload-pack=…`, `-oProxyCommand=…` as an ssh host; simple-git CVE-2022-24433,
 * -24066, -25912, -25860 and their later bypasses). So there are three layers, each enough on its own for the
 * known attacks: an allowlist of URL shapes and ref names checked before any process starts; every user value
 * placed after `--end-of-options`, so git never reads it as an option; and `GIT_ALLOW_PROTOCOL`, so git itself
 * refuses any transport but the allowed ones (`ext::`, `fd::` and remote helpers included).
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, posix, resolve } from 'node:path';
import { simpleGit, type SimpleGitOptions } from 'simple-git';
import { badRequest, ClusterRunnerError, errorMessage } from './errors.ts';
import { killMarkedProcesses, MARKER_VARIABLE } from './process.ts';

export interface GitSource {
  readonly url: string;
  /** A branch name, or a full ref (`refs/pull/1/head`); the default `master` is applied by the caller. */
  readonly branch: string;
  /** 40 or 64 hex characters, lower-case. */
  readonly hash: string | null;
  /** The default `origin` is applied by the caller. */
  readonly remote: string;
}

export interface GitCacheOptions {
  /** The folder holding one bare mirror per repository; created when missing. */
  readonly root: string;
  /** The time limit of each git command, in milliseconds (conf `git_timeout_seconds`, default 600 s). */
  readonly timeoutMs: number;
  /** Accept `file://` URLs and absolute local paths (conf `allow_local_repositories`, default true). */
  readonly allowLocalRepositories: boolean;
}

// ---- validation ---------------------------------------------------------------------------------------------

export const MAX_URL_LENGTH = 4096;
export const MAX_BRANCH_LENGTH = 255;

const URL_MESSAGE =
  '"url" must be an https://, http://, ssh:// or user@host:path git URL (file:// and local paths only when allow_local_repositories is on).';
const BRANCH_MESSAGE =
  `"branch" must be a git branch or ref name of at most ${MAX_BRANCH_LENGTH} characters: no spaces, control characters, "..", "@{", "//" or any of ~^:?*[\\, not starting with "-" or "/", not ending with "/", "." or ".lock".`;
const HASH_MESSAGE = '"hash" must be a commit id: 40 or 64 lower-case hex characters.';
const REMOTE_MESSAGE =
  '"remote" must be a remote name: a letter or digit, then up to 99 letters, digits, ".", "_" or "-" (no "..", not ending with "." or ".lock").';

const HASH = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const REMOTE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/* Control, format, unassigned and separator characters: a newline or a space splits a value in a shell or in
 * git's own parsing of ssh commands and config, and invisible characters make a URL lie to whoever reads it. */
const INVISIBLE = /[\p{C}\p{Z}]/u;
/* git runs `git-remote-<transport>` for `<transport>::<address>`, whatever the transport is (`ext::` runs a
 * shell command). git recognises it as a leading run of URL-scheme characters followed by `::`. */
const TRANSPORT_HELPER = /^[A-Za-z0-9+.-]+::/;
const REF_FORBIDDEN = /[\x00-\x20\x7f~^:?*[\\]/;

/* A host may not start with "-" or ".": ssh reads `-oProxyCommand=…` as an option (CVE-2017-1000117). */
const HOST = String.raw`(?:[A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])`;
/* An ssh user name goes to ssh as `user@host`; the same rule as the host keeps it from being an option. */
const SSH_USER = String.raw`[A-Za-z0-9_][A-Za-z0-9._-]*`;
/* http(s) user info: RFC 3986 unreserved, sub-delims and percent-escapes; "@", "/" and spaces must be escaped. */
const HTTP_USERINFO = String.raw`[A-Za-z0-9._~%!$&'()*+,;=][A-Za-z0-9._~%!$&'()*+,;=-]*(?::[A-Za-z0-9._~%!$&'()*+,;=:-]*)?`;

const HTTP_URL = new RegExp(String.raw`^(https?)://(?:(${HTTP_USERINFO})@)?(${HOST})(?::(\d{1,5}))?([/?#].*)?$`, 's');
const SSH_URL = new RegExp(String.raw`^ssh://(?:(${SSH_USER})@)?(${HOST})(?::(\d{1,5}))?(/.*)$`, 's');
/* scp-like `user@host:path`: the path goes to the server's upload-pack, which would read a leading "-" as an
 * option. */
const SCP_URL = new RegExp(String.raw`^(${SSH_USER})@(${HOST}):(?!-)(.+)$`, 's');
const FILE_URL = /^file:\/\/(\/.*)$/s;

type GitLocation =
  | { readonly kind: 'http'; readonly scheme: 'http' | 'https'; readonly host: string; readonly port: string | null; readonly rest: string }
  | { readonly kind: 'ssh'; readonly user: string | null; readonly host: string; readonly port: string | null; readonly path: string }
  | { readonly kind: 'scp'; readonly user: string; readonly host: string; readonly path: string }
  | { readonly kind: 'local'; readonly path: string };

/** The repository a URL names, or null when the URL is not one of the accepted shapes. */
function parseGitUrl(url: string): GitLocation | null {
  if (url.length === 0 || url.length > MAX_URL_LENGTH || url.startsWith('-')) return null;
  if (INVISIBLE.test(url) || TRANSPORT_HELPER.test(url)) return null;
  let match = HTTP_URL.exec(url);
  if (match) {
    // User info is left out on purpose: it is credentials, not part of which repository this is.
    return { kind: 'http', scheme: match[1] as 'http' | 'https', host: match[3]!, port: match[4] ?? null, rest: match[5] ?? '' };
  }
  match = SSH_URL.exec(url);
  if (match) return { kind: 'ssh', user: match[1] ?? null, host: match[2]!, port: match[3] ?? null, path: match[4]! };
  match = SCP_URL.exec(url);
  if (match) return { kind: 'scp', user: match[1]!, host: match[2]!, path: match[3]! };
  match = FILE_URL.exec(url);
  if (match) return { kind: 'local', path: match[1]! };
  if (url.startsWith('/')) return { kind: 'local', path: url };
  return null;
}

/** Git's ref-name rules (`git check-ref-format`), which also keep a name from being read as an option. */
function isValidRefName(name: string, maxLength: number): boolean {
  if (name.length === 0 || name.length > maxLength) return false;
  if (REF_FORBIDDEN.test(name) || INVISIBLE.test(name)) return false;
  if (name === '@' || name.includes('..') || name.includes('@{') || name.includes('//')) return false;
  if (name.startsWith('-') || name.startsWith('/') || name.endsWith('/') || name.endsWith('.')) return false;
  return name.split('/').every((part) => !part.startsWith('.') && !part.endsWith('.lock'));
}

function isValidRemote(remote: string): boolean {
  return REMOTE.test(remote) && isValidRefName(remote, 100);
}

/** Throws a 400 ClusterRunnerError naming the field when anything is unsafe or malformed. Starts no process. */
export function validateGitSource(source: GitSource, options: { allowLocalRepositories: boolean }): void {
  const url: unknown = source.url;
  const location = typeof url === 'string' ? parseGitUrl(url) : null;
  if (location === null || (location.kind === 'local' && !options.allowLocalRepositories)) {
    throw badRequest(URL_MESSAGE, 'INVALID_GIT_SOURCE');
  }
  const branch: unknown = source.branch;
  if (typeof branch !== 'string' || !isValidRefName(branch, MAX_BRANCH_LENGTH)) throw badRequest(BRANCH_MESSAGE, 'INVALID_GIT_SOURCE');
  const hash: unknown = source.hash;
  if (hash !== null && (typeof hash !== 'string' || !HASH.test(hash))) throw badRequest(HASH_MESSAGE, 'INVALID_GIT_SOURCE');
  const remote: unknown = source.remote;
  if (typeof remote !== 'string' || !isValidRemote(remote)) throw badRequest(REMOTE_MESSAGE, 'INVALID_GIT_SOURCE');
}

function validateUrl(url: string, allowLocalRepositories: boolean): void {
  const location = parseGitUrl(url);
  if (location === null || (location.kind === 'local' && !allowLocalRepositories)) throw badRequest(URL_MESSAGE, 'INVALID_GIT_SOURCE');
}

function validateCommit(commit: string): void {
  if (typeof commit !== 'string' || !HASH.test(commit)) {
    throw badRequest('"commit" must be a commit id: 40 or 64 lower-case hex characters.', 'INVALID_GIT_SOURCE');
  }
}

// ---- cache keys and display -----------------------------------------------------------------------------------

/*
 * Spellings of one repository that git treats alike share a key: scheme and host case, trailing slashes,
 * `file://` against the bare path, and http(s) credentials (a rotated token must not start a new mirror).
 * `.git` suffixes are kept: for a local path, `repo` and `repo.git` can be two repositories.
 */
function normaliseUrl(url: string): string {
  const location = parseGitUrl(url);
  const trim = (path: string) => path.replace(/\/+$/, '');
  switch (location?.kind) {
    case 'http':
      return `${location.scheme}://${location.host.toLowerCase()}${location.port === null ? '' : `:${location.port}`}${trim(location.rest)}`;
    case 'ssh':
      return `ssh://${location.user === null ? '' : `${location.user}@`}${location.host.toLowerCase()}${location.port === null ? '' : `:${location.port}`}${trim(location.path)}`;
    case 'scp':
      return `${location.user}@${location.host.toLowerCase()}:${trim(location.path)}`;
    case 'local':
      return `file://${trim(posix.normalize(location.path)) || '/'}`;
    case undefined:
      return url;
    default:
      return assertNever(location);
  }
}

/** A filesystem-safe, stable key for a repository URL (hash of the normalised URL plus a readable slug). */
export function repositoryKey(url: string): string {
  const normalised = normaliseUrl(url);
  const digest = createHash('sha256').update(normalised).digest('hex').slice(0, 20);
  const withoutScheme = normalised.replace(/^[a-z]+:\/\//, '').replace(/^[^@/]*@/, '');
  const words = withoutScheme.split(/[/:]+/).filter((word) => word !== '' && word !== '~');
  const slug = words
    .slice(-2)
    .join('-')
    .replace(/\.git$/, '')
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[._-]+/, '')
    .slice(0, 60);
  return `${slug === '' ? 'repository' : slug}-${digest}`;
}

/** The URL as it may be shown in logs and errors: `user:***@` for a password, `***@` for a token-like user. */
export function maskGitUrl(url: string): string {
  return url.replace(/^(https?:\/\/)([^@/?#]*)@/, (_all, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return colon === -1 ? `${scheme}***@` : `${scheme}${userinfo.slice(0, colon)}:***@`;
  });
}

/* git hides passwords in most of its messages, not in all; and the URL can be echoed back by a server. */
function maskText(text: string, url: string): string {
  const masked = maskGitUrl(url);
  return text.split(url).join(masked).replace(/https?:\/\/[^\s@/'"]*@/g, (userinfo) => maskGitUrl(userinfo));
}

// ---- running git --------------------------------------------------------------------------------------------

const REMOTE_PROTOCOLS = 'https:http:ssh';
/* Checkouts clone from the mirror, which is a local path: `file` is the only transport they ever need. */
const CHECKOUT_PROTOCOLS = 'file';

/*
 * Constant settings on every command. `protocol.ext.allow=never` is redundant while GIT_ALLOW_PROTOCOL is set
 * (git then ignores protocol.*.allow) and is kept in case that variable is ever lost. Automatic gc must not
 * detach: a background gc would outlive the command, its time limit and the per-repository queue. The lock
 * timeouts let git wait for another process's ref update instead of failing at once: a master and a worker
 * on one machine share `<base_directory>/git-cache`, and the queue below only orders one process.
 */
const GIT_CONFIG = [
  'protocol.ext.allow=never',
  'gc.autoDetach=false',
  'maintenance.autoDetach=false',
  'init.defaultBranch=master',
  'core.filesRefLockTimeout=30000',
  'core.packedRefsTimeout=30000',
];
/*
 * simple-git warns once per process about each setting it does not know as safe, and will refuse them in its
 * next major version, unless it is listed in allowConfig (which matches lower case).
 */
const GIT_CONFIG_KEYS = GIT_CONFIG.map((entry) => entry.slice(0, entry.indexOf('=')).toLowerCase());

/*
 * The last queued operation of each mirror, by path; an entry goes when its queue empties. Kept per process,
 * not per GitCache: the master and the workers of an in-process cluster may all open the same root.
 */
const MIRROR_QUEUES = new Map<string, Promise<void>>();

/*
 * simple-git's own guard refuses the hardening settings themselves (an askpass program, an ssh command, a
 * config path, a protocol setting, config from the environment, a credential helper), because it cannot tell
 * them from an attacker's. These six are opened for our constants only: user values never reach an option
 * position (they follow --end-of-options and were validated), and every other category of the guard stays on.
 */
const SIMPLE_GIT_UNSAFE: NonNullable<SimpleGitOptions['unsafe']> = {
  allowUnsafeAskPass: true,
  allowUnsafeSshCommand: true,
  allowUnsafeConfigPaths: true,
  allowUnsafeProtocolOverride: true,
  // Our credential helper (credentialsOutOfArguments); git's environment is built from nothing, so no other.
  allowUnsafeConfigEnvCount: true,
  allowUnsafeCredentialHelper: true,
};

/* Operator settings that git or its helpers need to reach a server: proxies, CA certificates, the ssh agent. */
const PASSED_THROUGH = [
  'TMPDIR', 'SSH_AUTH_SOCK', 'http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY',
  'all_proxy', 'ALL_PROXY', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'GIT_SSL_CAINFO', 'GIT_SSL_CAPATH',
] as const;

/**
 * The whole environment of a git command, built from nothing so that nothing of the worker's own environment
 * (GIT_DIR, GIT_SSH, an askpass, an editor) reaches git unless listed here.
 */
export function gitEnvironment(allowedProtocols: string, ambient: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {
    PATH: ambient['PATH'] ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: ambient['HOME'] ?? homedir(),
    // Git's messages are matched below (a missing branch); they must not be translated.
    LC_ALL: 'C',
    GIT_TERMINAL_PROMPT: '0',
    GIT_ASKPASS: '/bin/false',
    GIT_SSH_COMMAND: 'ssh -o BatchMode=yes',
    GIT_ALLOW_PROTOCOL: allowedProtocols,
    GIT_CONFIG_NOSYSTEM: '1',
    // A user's ~/.gitconfig could set hooks, an fsmonitor, url.*.insteadOf or credential helpers.
    GIT_CONFIG_GLOBAL: '/dev/null',
  };
  for (const name of PASSED_THROUGH) {
    const value = ambient[name];
    if (value !== undefined && value !== '') env[name] = value;
  }
  return env;
}

/*
 * An inline credential helper (git runs `!` helpers with sh): it answers "get" from the environment, so the
 * helper's text holds variable names only. It is set through GIT_CONFIG_COUNT, not `-c`, which would be argv.
 */
const CREDENTIAL_HELPER =
  '!f() { test "$1" = get || return 0; printf \'username=%s\\npassword=%s\\n\' "$CLUSTERRUNNER_GIT_USERNAME" "$CLUSTERRUNNER_GIT_PASSWORD"; }; f';

/**
 * Credentials in an http(s) URL leave git's arguments, which every local user can read with `ps`, for its
 * environment (readable by this user and root only), whence the helper above hands them to git. Other URLs
 * (ssh keys come from the agent or ~/.ssh) are returned unchanged.
 */
export function credentialsOutOfArguments(url: string): { url: string; env: Record<string, string> } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { url, env: {} };
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || (parsed.username === '' && parsed.password === '')) return { url, env: {} };
  const env = {
    GIT_CONFIG_COUNT: '2',
    // An empty helper first clears any helper configured elsewhere, so ours is the only one asked.
    GIT_CONFIG_KEY_0: 'credential.helper',
    GIT_CONFIG_VALUE_0: '',
    GIT_CONFIG_KEY_1: 'credential.helper',
    GIT_CONFIG_VALUE_1: CREDENTIAL_HELPER,
    CLUSTERRUNNER_GIT_USERNAME: decodeURIComponent(parsed.username),
    CLUSTERRUNNER_GIT_PASSWORD: decodeURIComponent(parsed.password),
  };
  parsed.username = '';
  parsed.password = '';
  return { url: parsed.href, env };
}

function assertNever(value: never): never {
  throw new Error(`unexpected value ${String(value)}`);
}

/** The last part of git's output, where its reason is; enough to act on, short enough for an error message. */
function tail(text: string, maxChars = 2000): string {
  const trimmed = text.trim();
  return trimmed.length <= maxChars ? trimmed : `…${trimmed.slice(-maxChars)}`;
}

function canceled(what: string, cause: unknown): ClusterRunnerError {
  return new ClusterRunnerError('CANCELED', `${what} was canceled.`, { status: 409, cause });
}

/* Waits for `previous`, or rejects as soon as the signal aborts. */
function waitOrAbort(previous: Promise<void>, signal: AbortSignal | undefined, what: string): Promise<void> {
  if (!signal) return previous;
  if (signal.aborted) return Promise.reject(canceled(what, signal.reason));
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(canceled(what, signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
    void previous.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}

interface GitRun {
  readonly cwd: string;
  readonly env: Record<string, string>;
  readonly signal: AbortSignal | undefined;
  /** What this command does, for error messages, with the URL masked: `git fetch of https://…`. */
  readonly what: string;
}

/** A git command that failed by itself (not stopped by us); `output` is git's stderr, masked. */
class GitCommandError extends Error {
  readonly output: string;
  constructor(output: string, cause: unknown) {
    super(output, { cause });
    this.name = 'GitCommandError';
    this.output = output;
  }
}

// ---- the cache ----------------------------------------------------------------------------------------------

/**
 * One bare repository per URL under root, cloned once and fetched after that. Operations on one repository
 * run one at a time (a per-mirror promise chain); different repositories in parallel.
 *
 * A mirror keeps every branch as `refs/remotes/<remote>/<branch>` (fetched with `--prune`, so deleted and
 * renamed branches never block a later fetch) plus the tags that point into them. Credentials in the URL
 * are never written to disk: the URL is given on each fetch instead of being saved as a remote. A mirror
 * appears under root only once its first fetch has succeeded, so a wrong URL or branch leaves nothing behind.
 */
export class GitCache {
  readonly #root: string;
  readonly #timeoutMs: number;
  readonly #allowLocalRepositories: boolean;
  readonly #remoteEnv: Record<string, string>;
  readonly #checkoutEnv: Record<string, string>;

  constructor(options: GitCacheOptions) {
    if (!isAbsolute(options.root)) throw new Error(`GitCache root must be an absolute path, not ${options.root}`);
    if (!(options.timeoutMs > 0)) throw new Error(`GitCache timeoutMs must be > 0, not ${options.timeoutMs}`);
    this.#root = resolve(options.root);
    this.#timeoutMs = options.timeoutMs;
    this.#allowLocalRepositories = options.allowLocalRepositories;
    this.#remoteEnv = gitEnvironment(options.allowLocalRepositories ? `${REMOTE_PROTOCOLS}:file` : REMOTE_PROTOCOLS);
    this.#checkoutEnv = gitEnvironment(CHECKOUT_PROTOCOLS);
  }

  /** The folder of a repository's bare mirror (it exists once a fetch has started). */
  mirrorPath(url: string): string {
    return join(this.#root, repositoryKey(url));
  }

  /**
   * Fetches the branch (and the hash, when given and not already present) into the cache; returns the exact
   * commit to build: the hash when given (after checking it exists, else an error naming the hash and branch),
   * else the branch head. An unknown branch gives a 400 naming the branch with git's message.
   */
  async fetch(source: GitSource, signal?: AbortSignal): Promise<string> {
    validateGitSource(source, { allowLocalRepositories: this.#allowLocalRepositories });
    const shownUrl = maskGitUrl(source.url);
    const mirror = this.mirrorPath(source.url);
    const refs = trackingRefs(source);
    return exclusive(mirror, signal, `git fetch of ${shownUrl}`, async () => {
      if (isRepository(mirror)) await this.#fetchBranch(mirror, source, refs, signal);
      else await this.#createMirror(mirror, source, refs, signal);
      const head = await this.#resolveCommit(mirror, refs.tracking);
      if (head === null) {
        throw new ClusterRunnerError('UNKNOWN_BRANCH', `Branch "${source.branch}" of ${shownUrl} does not point to a commit.`, { status: 400 });
      }
      if (source.hash === null) return head;
      return (await this.#resolveCommit(mirror, source.hash)) ?? (await this.#fetchCommit(source, mirror, signal));
    });
  }

  /**
   * Makes `dir` (must not exist yet) a plain checkout of `commit`: the working tree plus a `.git` of its own.
   * The clone is `--local` from the mirror: objects are hard-linked, never shared through `alternates`, so a
   * later fetch or gc in the mirror cannot break a checkout that is still in use.
   */
  async checkout(source: GitSource, commit: string, dir: string, signal?: AbortSignal): Promise<void> {
    validateGitSource(source, { allowLocalRepositories: this.#allowLocalRepositories });
    validateCommit(commit);
    if (!isAbsolute(dir)) throw new Error(`the checkout folder must be an absolute path, not ${dir}`);
    if (await pathExists(dir)) {
      throw new ClusterRunnerError('CHECKOUT_EXISTS', `Cannot check out into ${dir}: it already exists.`, { status: 409 });
    }
    const shownUrl = maskGitUrl(source.url);
    const mirror = this.mirrorPath(source.url);
    try {
      // Only the clone reads the mirror; the slow part, writing the files, runs outside the queue.
      await exclusive(mirror, signal, `git checkout of ${shownUrl}`, async () => {
        if ((await this.#resolveCommit(mirror, commit)) === null) {
          throw new ClusterRunnerError('UNKNOWN_COMMIT', `Commit ${commit} of ${shownUrl} is not in the cache; fetch it first.`, { status: 500 });
        }
        await mkdir(dirname(dir), { recursive: true });
        const run: GitRun = { cwd: dirname(dir), env: this.#checkoutEnv, signal, what: `git clone of the cache of ${shownUrl}` };
        await this.#git(['clone', '--quiet', '--local', '--no-checkout', '--end-of-options', mirror, dir], run, source.url)
          .catch((error: unknown) => { throw asClusterRunnerError(error, run.what); });
      });
      // `checkout` does not take --end-of-options in git 2.39; `switch` does.
      const run: GitRun = { cwd: dir, env: this.#checkoutEnv, signal, what: `git checkout of ${commit}` };
      await this.#git(['switch', '--quiet', '--detach', '--end-of-options', commit], run, source.url)
        .catch((error: unknown) => { throw asClusterRunnerError(error, run.what); });
    } catch (error) {
      // The folder did not exist before: whatever is there now is a half-made checkout.
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /**
   * True when the commit is already in the cache (no network). It does not wait for the repository's queue:
   * git readers need no lock, and a fetch running meanwhile only adds objects.
   */
  async hasCommit(url: string, commit: string): Promise<boolean> {
    validateUrl(url, this.#allowLocalRepositories);
    validateCommit(commit);
    const mirror = this.mirrorPath(url);
    if (!isRepository(mirror)) return false;
    return (await this.#resolveCommit(mirror, commit)) !== null;
  }

  /*
   * The first fetch goes into a staging folder that becomes the mirror only when it succeeded. Staging names
   * start with "." and so never collide with a repository key.
   */
  async #createMirror(mirror: string, source: GitSource, refs: TrackingRefs, signal: AbortSignal | undefined): Promise<void> {
    await mkdir(this.#root, { recursive: true });
    const staging = join(this.#root, `.${basename(mirror)}-${randomUUID()}.tmp`);
    try {
      const run: GitRun = { cwd: this.#root, env: this.#checkoutEnv, signal, what: 'git init of a repository cache' };
      await this.#git(['init', '--quiet', '--bare', '--end-of-options', staging], run, null)
        .catch((error: unknown) => { throw asClusterRunnerError(error, run.what); });
      await this.#fetchBranch(staging, source, refs, signal);
      await rename(staging, mirror).catch(async (error: unknown) => {
        if (!isRepository(mirror)) throw error;
        // Another process sharing the root made the mirror meanwhile: use theirs.
        await this.#fetchBranch(mirror, source, refs, signal);
      });
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  async #fetchBranch(repository: string, source: GitSource, refs: TrackingRefs, signal: AbortSignal | undefined): Promise<void> {
    const shownUrl = maskGitUrl(source.url);
    const remote = credentialsOutOfArguments(source.url);
    const run: GitRun = { cwd: repository, env: { ...this.#remoteEnv, ...remote.env }, signal, what: `git fetch of ${shownUrl}` };
    try {
      await this.#git(
        ['fetch', '--quiet', '--prune', '--no-write-fetch-head', '--end-of-options', remote.url, ...refs.refspecs],
        run,
        source.url,
      );
    } catch (error) {
      if (error instanceof GitCommandError && /couldn't find remote ref/i.test(error.output)) {
        throw new ClusterRunnerError('UNKNOWN_BRANCH', `Branch "${source.branch}" was not found in ${shownUrl}: ${tail(error.output)}`, {
          status: 400,
          cause: error,
        });
      }
      throw asClusterRunnerError(error, run.what);
    }
  }

  /* The hash is not in any fetched branch: ask the server for it by id (protocol v2 servers allow that). */
  async #fetchCommit(source: GitSource, mirror: string, signal: AbortSignal | undefined): Promise<string> {
    const hash = source.hash!;
    const shownUrl = maskGitUrl(source.url);
    const notFound = (detail: string, cause?: unknown) =>
      new ClusterRunnerError(
        'UNKNOWN_COMMIT',
        `Commit ${hash} was not found in ${shownUrl} (branch "${source.branch}")${detail === '' ? '.' : `: ${tail(detail)}`}`,
        { status: 400, cause },
      );
    const remote = credentialsOutOfArguments(source.url);
    const run: GitRun = { cwd: mirror, env: { ...this.#remoteEnv, ...remote.env }, signal, what: `git fetch of ${hash} from ${shownUrl}` };
    try {
      await this.#git(['fetch', '--quiet', '--no-write-fetch-head', '--end-of-options', remote.url, hash], run, source.url);
    } catch (error) {
      if (error instanceof GitCommandError) throw notFound(error.output, error);
      throw asClusterRunnerError(error, run.what);
    }
    const commit = await this.#resolveCommit(mirror, hash);
    if (commit === null) throw notFound('');
    return commit;
  }

  /* The commit a ref or id names in the mirror, or null when it is not there or not a commit. */
  async #resolveCommit(mirror: string, revision: string): Promise<string | null> {
    const run: GitRun = { cwd: mirror, env: this.#checkoutEnv, signal: undefined, what: 'git rev-parse' };
    try {
      const output = await this.#git(['rev-parse', '--verify', '--quiet', '--end-of-options', `${revision}^{commit}`], run, null);
      const commit = output.trim();
      return HASH.test(commit) ? commit : null;
    } catch (error) {
      if (error instanceof GitCommandError) return null;
      throw asClusterRunnerError(error, run.what);
    }
  }

  /**
   * Runs one git command under the time limit and the caller's signal. Arguments are passed as a list (no
   * shell); the caller puts user values after --end-of-options. `url` is masked out of git's messages.
   */
  async #git(args: readonly string[], run: GitRun, url: string | null): Promise<string> {
    const deadline = AbortSignal.timeout(this.#timeoutMs);
    const abort = run.signal ? AbortSignal.any([run.signal, deadline]) : deadline;
    const marker = randomUUID();
    const git = simpleGit({
      baseDir: run.cwd,
      abort,
      config: GIT_CONFIG,
      allowConfig: GIT_CONFIG_KEYS,
      allowEnvironment: [...Object.keys(run.env), MARKER_VARIABLE],
      unsafe: SIMPLE_GIT_UNSAFE,
      // simple-git treats a failure that printed nothing as a success; the exit code decides here.
      errors: (error, result) => error ?? (result.exitCode === 0 ? undefined : new Error(`git exited with code ${result.exitCode}`)),
    }).env({ ...run.env, [MARKER_VARIABLE]: marker });
    try {
      return await git.raw([...args]);
    } catch (error) {
      if (abort.aborted) {
        // simple-git stops git alone (SIGINT, no process group), and git leaves its transport helper behind:
        // a git-remote-http blocked on a silent server, or an ssh, would hold the connection for ever.
        killMarkedProcesses(marker);
      }
      if (run.signal?.aborted) throw canceled(run.what, error);
      if (deadline.aborted) {
        throw new ClusterRunnerError('GIT_TIMEOUT', `${run.what} took longer than ${formatSeconds(this.#timeoutMs)} and was stopped.`, {
          status: 504,
          cause: error,
        });
      }
      const output = errorMessage(error);
      throw new GitCommandError(url === null ? output : maskText(output, url), error);
    }
  }
}

/* Runs the operation after every operation queued before it on the same mirror (see MIRROR_QUEUES). */
async function exclusive<T>(mirror: string, signal: AbortSignal | undefined, what: string, operation: () => Promise<T>): Promise<T> {
  const previous = MIRROR_QUEUES.get(mirror) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => {
    release = resolve;
  });
  // The next operation waits for this one and, should this one give up while queued, for the one before.
  const tail = previous.then(() => mine);
  MIRROR_QUEUES.set(mirror, tail);
  try {
    await waitOrAbort(previous, signal, what);
    return await operation();
  } finally {
    release();
    if (MIRROR_QUEUES.get(mirror) === tail) MIRROR_QUEUES.delete(mirror);
  }
}

/** Which refs a fetch asks for, and the ref of the mirror where the requested branch lands. */
interface TrackingRefs {
  readonly refspecs: readonly string[];
  readonly tracking: string;
}

function trackingRefs(source: GitSource): TrackingRefs {
  const all = `+refs/heads/*:refs/remotes/${source.remote}/*`;
  const isFullRef = source.branch.startsWith('refs/');
  const branch = source.branch.startsWith('refs/heads/') ? source.branch.slice('refs/heads/'.length) : source.branch;
  if (!isFullRef || source.branch.startsWith('refs/heads/')) {
    // Named again on its own so that a missing branch is an error ("couldn't find remote ref"), not a no-op.
    const tracking = `refs/remotes/${source.remote}/${branch}`;
    return { refspecs: [all, `+refs/heads/${branch}:${tracking}`], tracking };
  }
  // Other refs (`refs/pull/1/head`, `refs/tags/v1`) get a namespace of their own, apart from the branches.
  const tracking = `refs/clusterrunner/${source.remote}/${source.branch.slice('refs/'.length)}`;
  return { refspecs: [all, `+${source.branch}:${tracking}`], tracking };
}

function asClusterRunnerError(error: unknown, what: string): ClusterRunnerError {
  if (error instanceof ClusterRunnerError) return error;
  const output = error instanceof GitCommandError ? error.output : errorMessage(error);
  return new ClusterRunnerError('GIT_FAILED', `${what} failed: ${tail(output)}`, { status: 502, cause: error });
}

function isRepository(path: string): boolean {
  return existsSync(join(path, 'HEAD'));
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

function formatSeconds(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Number((ms / 1000).toFixed(1))} s`;
}
