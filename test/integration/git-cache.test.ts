import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { GitCache, gitEnvironment, repositoryKey, type GitSource } from '../../shared/git.ts';

/* The test's own git runs, isolated from the machine's configuration like the cache's are. */
const GIT_ENV: NodeJS.ProcessEnv = {
  PATH: process.env['PATH'],
  HOME: process.env['HOME'],
  LC_ALL: 'C',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'Test Author',
  GIT_AUTHOR_EMAIL: 'author@example.com',
  GIT_COMMITTER_NAME: 'Test Committer',
  GIT_COMMITTER_EMAIL: 'committer@example.com',
};

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'init.defaultBranch=master', ...args], { cwd, env: GIT_ENV, encoding: 'utf8' }).trim();
}

/** Writes the files and commits them; returns the new commit. */
function commit(repo: string, files: Record<string, string>, message: string): string {
  for (const [name, content] of Object.entries(files)) writeFileSync(join(repo, name), content);
  git(repo, 'add', '--all');
  git(repo, 'commit', '--quiet', '-m', message);
  return git(repo, 'rev-parse', 'HEAD');
}

let folder: string;
let origin: string;
let root: string;

beforeEach(() => {
  folder = mkdtempSync(join(tmpdir(), 'cr-git-cache-'));
  origin = join(folder, 'origin');
  root = join(folder, 'cache');
  mkdirSync(origin);
  git(origin, 'init', '--quiet');
});

afterEach(() => {
  rmSync(folder, { recursive: true, force: true });
});

function createCache(options: { timeoutMs?: number; allowLocalRepositories?: boolean } = {}): GitCache {
  return new GitCache({ root, timeoutMs: options.timeoutMs ?? 30_000, allowLocalRepositories: options.allowLocalRepositories ?? true });
}

function source(url: string, fields: Partial<GitSource> = {}): GitSource {
  return { url, branch: 'master', hash: null, remote: 'origin', ...fields };
}

describe('GitCache.fetch', () => {
  it('runs git with its settings and no warning from simple-git about them', () => {
    const head = commit(origin, { 'a.txt': 'a' }, 'first');
    // A process of its own: simple-git warns about a setting once per process, and the retry of a test
    // that failed here would pass in a process that has warned already.
    const script = [
      `import { GitCache } from ${JSON.stringify(new URL('../../shared/git.ts', import.meta.url).href)};`,
      'const cache = new GitCache({ root: process.argv[1], timeoutMs: 30000, allowLocalRepositories: true });',
      "process.stdout.write(await cache.fetch({ url: process.argv[2], branch: 'master', hash: null, remote: 'origin' }));",
    ].join('\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, root, pathToFileURL(origin).href], { encoding: 'utf8', timeout: 60_000 });
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe(head);
  });

  it('fetches a branch head into a bare mirror and returns its commit', async () => {
    commit(origin, { 'a.txt': 'one\n' }, 'one');
    const two = commit(origin, { 'a.txt': 'two\n' }, 'two');
    const cache = createCache();
    const url = pathToFileURL(origin).href;

    expect(await cache.fetch(source(url))).toBe(two);
    const mirror = join(root, repositoryKey(url));
    expect(cache.mirrorPath(url)).toBe(mirror);
    expect(git(mirror, 'rev-parse', '--is-bare-repository')).toBe('true');
    expect(git(mirror, 'rev-parse', 'refs/remotes/origin/master')).toBe(two);
    // The URL is given on each fetch, never saved: credentials in it must not reach the disk.
    expect(readFileSync(join(mirror, 'config'), 'utf8')).not.toContain(origin);
  });

  it('fetches an older commit by hash, and one that no branch holds any more', async () => {
    const one = commit(origin, { 'a.txt': 'one\n' }, 'one');
    git(origin, 'checkout', '--quiet', '-b', 'side');
    const side = commit(origin, { 'b.txt': 'side\n' }, 'side');
    git(origin, 'checkout', '--quiet', 'master');
    const two = commit(origin, { 'a.txt': 'two\n' }, 'two');
    git(origin, 'branch', '--quiet', '-D', 'side');
    const cache = createCache();

    expect(await cache.fetch(source(origin, { hash: one }))).toBe(one);
    expect(await cache.fetch(source(origin, { hash: side }))).toBe(side);
    expect(await cache.fetch(source(origin))).toBe(two);
  });

  it('names an unknown branch with git\'s message, and keeps no mirror of a first fetch that failed', async () => {
    commit(origin, { 'a.txt': 'one\n' }, 'one');
    const cache = createCache();
    const error = await cache.fetch(source(origin, { branch: 'no-such-branch' })).catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 400, code: 'UNKNOWN_BRANCH' });
    expect((error as Error).message).toMatch(/^Branch "no-such-branch" was not found in .*origin: .*couldn't find remote ref refs\/heads\/no-such-branch/s);
    expect(readdirSync(root)).toEqual([]);
  });

  it('names an unknown hash and the branch', async () => {
    commit(origin, { 'a.txt': 'one\n' }, 'one');
    const cache = createCache();
    const hash = '0123456789abcdef0123456789abcdef01234567';
    const error = await cache.fetch(source(origin, { hash })).catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 400, code: 'UNKNOWN_COMMIT' });
    expect((error as Error).message).toContain(`Commit ${hash} was not found in`);
    expect((error as Error).message).toContain('(branch "master")');
  });

  it('fetches a new commit the second time, into the same mirror', async () => {
    const one = commit(origin, { 'a.txt': 'one\n' }, 'one');
    const cache = createCache();
    const url = pathToFileURL(origin).href;
    expect(await cache.fetch(source(url))).toBe(one);
    const mirror = cache.mirrorPath(url);
    const firstEntries = readdirSync(root);

    const two = commit(origin, { 'a.txt': 'two\n' }, 'two');
    expect(await cache.hasCommit(url, two)).toBe(false);
    expect(await cache.fetch(source(url))).toBe(two);
    expect(readdirSync(root)).toEqual(firstEntries);
    expect(cache.mirrorPath(url)).toBe(mirror);
    expect(await cache.hasCommit(url, one)).toBe(true);
    expect(await cache.hasCommit(url, two)).toBe(true);
    // The other spelling of the same repository shares the mirror.
    expect(await cache.hasCommit(origin, two)).toBe(true);
  });

  it('follows deleted and renamed branches (a branch "a" replaced by "a/b")', async () => {
    commit(origin, { 'a.txt': 'one\n' }, 'one');
    git(origin, 'branch', 'a');
    const cache = createCache();
    await cache.fetch(source(origin, { branch: 'a' }));
    git(origin, 'branch', '--quiet', '-D', 'a');
    git(origin, 'branch', 'a/b');
    const head = git(origin, 'rev-parse', 'HEAD');
    expect(await cache.fetch(source(origin, { branch: 'a/b' }))).toBe(head);
    await expect(cache.fetch(source(origin, { branch: 'a' }))).rejects.toMatchObject({ code: 'UNKNOWN_BRANCH' });
  });

  it('fetches a full ref such as a pull request head', async () => {
    commit(origin, { 'a.txt': 'one\n' }, 'one');
    git(origin, 'checkout', '--quiet', '-b', 'pr');
    const pr = commit(origin, { 'a.txt': 'pr\n' }, 'pr');
    git(origin, 'checkout', '--quiet', 'master');
    git(origin, 'update-ref', 'refs/pull/7/head', pr);
    git(origin, 'branch', '--quiet', '-D', 'pr');
    const cache = createCache();
    expect(await cache.fetch(source(origin, { branch: 'refs/pull/7/head' }))).toBe(pr);
    expect(await cache.fetch(source(origin, { branch: 'refs/heads/master' }))).toBe(git(origin, 'rev-parse', 'master'));
  });

  it('runs concurrent fetches of one repository one at a time, all succeeding', async () => {
    commit(origin, { 'a.txt': 'one\n' }, 'one');
    for (const name of ['b1', 'b2', 'b3']) git(origin, 'branch', name);
    const head = git(origin, 'rev-parse', 'HEAD');
    const cache = createCache();
    const results = await Promise.all(['master', 'b1', 'b2', 'b3'].map((branch) => cache.fetch(source(origin, { branch }))));
    expect(results).toEqual([head, head, head, head]);
  });

  it('shares the queue of a mirror between caches of one root, and waits for another process\'s ref lock', async () => {
    commit(origin, { 'a.txt': 'one\n' }, 'one');
    for (const name of ['b1', 'b2', 'b3']) git(origin, 'branch', name);
    const caches = [createCache(), createCache(), createCache()];
    const results = await Promise.all(['b1', 'b2', 'b3'].map((branch, i) => caches[i]!.fetch(source(origin, { branch }))));
    expect(new Set(results).size).toBe(1);

    // Another process (a worker beside the master) is updating the ref: git waits for it instead of failing.
    const two = commit(origin, { 'a.txt': 'two\n' }, 'two');
    const lock = join(caches[0]!.mirrorPath(origin), 'refs', 'remotes', 'origin', 'master.lock');
    writeFileSync(lock, '');
    const fetching = caches[1]!.fetch(source(origin));
    setTimeout(() => rmSync(lock), 500);
    expect(await fetching).toBe(two);
  });

  it('takes file:// URLs and local paths only when local repositories are allowed', async () => {
    const head = commit(origin, { 'a.txt': 'one\n' }, 'one');
    const url = pathToFileURL(origin).href;
    expect(await createCache({ allowLocalRepositories: true }).fetch(source(url))).toBe(head);
    expect(await createCache({ allowLocalRepositories: true }).fetch(source(origin))).toBe(head);

    rmSync(root, { recursive: true, force: true });
    const strict = createCache({ allowLocalRepositories: false });
    for (const refused of [url, origin]) {
      await expect(strict.fetch(source(refused))).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/^"url"/) });
      await expect(strict.hasCommit(refused, head)).rejects.toMatchObject({ status: 400 });
    }
    expect(existsSync(root)).toBe(false);
  });
});

describe('GitCache.checkout', () => {
  it('checks out two commits into two folders at once, each independent of the mirror', async () => {
    const one = commit(origin, { 'a.txt': 'one\n', 'only-in-one.txt': 'x\n' }, 'one');
    const two = commit(origin, { 'a.txt': 'two\n' }, 'two');
    git(origin, 'rm', '--quiet', 'only-in-one.txt');
    git(origin, 'commit', '--quiet', '-m', 'three');
    const cache = createCache();
    const src = source(origin);
    await cache.fetch(src);

    const dirOne = join(folder, 'builds', '1', 'project');
    const dirTwo = join(folder, 'builds', '2', 'project');
    await Promise.all([cache.checkout(src, one, dirOne), cache.checkout(src, two, dirTwo)]);

    expect(readFileSync(join(dirOne, 'a.txt'), 'utf8')).toBe('one\n');
    expect(existsSync(join(dirOne, 'only-in-one.txt'))).toBe(true);
    expect(readFileSync(join(dirTwo, 'a.txt'), 'utf8')).toBe('two\n');
    expect(git(dirOne, 'rev-parse', 'HEAD')).toBe(one);
    expect(git(dirTwo, 'rev-parse', 'HEAD')).toBe(two);
    expect(git(dirTwo, 'status', '--porcelain')).toBe('');
    // No alternates: removing the whole cache leaves the checkouts whole.
    expect(existsSync(join(dirOne, '.git', 'objects', 'info', 'alternates'))).toBe(false);
    rmSync(root, { recursive: true, force: true });
    expect(git(dirOne, 'log', '--format=%s')).toBe('one');
    expect(git(dirTwo, 'fsck', '--no-progress', '--no-dangling')).toBe('');
  });

  it('refuses a folder that exists, and a commit that is not in the cache, leaving nothing behind', async () => {
    const one = commit(origin, { 'a.txt': 'one\n' }, 'one');
    const cache = createCache();
    await cache.fetch(source(origin));

    const existing = join(folder, 'existing');
    mkdirSync(existing);
    writeFileSync(join(existing, 'keep.txt'), 'keep');
    await expect(cache.checkout(source(origin), one, existing)).rejects.toMatchObject({ code: 'CHECKOUT_EXISTS' });
    expect(readdirSync(existing)).toEqual(['keep.txt']);

    const missing = join(folder, 'missing');
    await expect(cache.checkout(source(origin), 'b'.repeat(40), missing)).rejects.toMatchObject({ code: 'UNKNOWN_COMMIT' });
    expect(existsSync(missing)).toBe(false);
  });
});

describe('GitCache time limits and cancellation', () => {
  let server: Server;
  let sockets: Set<Socket>;
  let port: number;

  /* An HTTP "server" that accepts connections and never answers: a git that waits on it hangs for ever. */
  beforeEach(async () => {
    sockets = new Set();
    server = createServer((socket) => {
      sockets.add(socket);
      // Read (and ignore) the request: a paused socket would never notice the other end going away.
      socket.resume();
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterEach(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('stops a git that hangs, once the time limit passes, and drops its connection', async () => {
    const timeoutMs = 700;
    const cache = createCache({ timeoutMs });
    const started = Date.now();
    const error = await cache.fetch(source(`http://127.0.0.1:${port}/repo.git`)).catch((e: unknown) => e);
    // The server never answers: only the time limit can have ended it, and not before the limit.
    expect(error).toMatchObject({ status: 504, code: 'GIT_TIMEOUT' });
    expect((error as Error).message).toContain(`took longer than ${timeoutMs} ms`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(timeoutMs - 2);
    // git's http helper must not outlive it, holding the connection open.
    await vi.waitFor(() => expect(sockets.size).toBe(0), { timeout: 10_000 });
  });

  it('stops a git when the caller aborts', async () => {
    const cache = createCache();
    const controller = new AbortController();
    const fetching = cache.fetch(source(`http://127.0.0.1:${port}/repo.git`), controller.signal).catch((e: unknown) => e);
    await vi.waitFor(() => expect(sockets.size).toBe(1), { timeout: 10_000 });
    controller.abort();
    expect(await fetching).toMatchObject({ status: 409, code: 'CANCELED' });
    await vi.waitFor(() => expect(sockets.size).toBe(0), { timeout: 10_000 });
  });

  it('gives up waiting for a busy repository when the caller aborts', async () => {
    const cache = createCache();
    const url = `http://127.0.0.1:${port}/repo.git`;
    const first = new AbortController();
    const hanging = cache.fetch(source(url), first.signal).catch((e: unknown) => e);
    await vi.waitFor(() => expect(sockets.size).toBe(1), { timeout: 10_000 });
    const second = new AbortController();
    const queued = cache.fetch(source(url, { branch: 'other' }), second.signal).catch((e: unknown) => e);
    second.abort();
    expect(await queued).toMatchObject({ code: 'CANCELED' });
    expect(sockets.size).toBe(1);
    first.abort();
    expect(await hanging).toMatchObject({ code: 'CANCELED' });
  });
});

describe('GitCache errors', () => {
  /** A loopback port nobody listens on: git's connection is refused at once. */
  async function closedPort(): Promise<number> {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    return port;
  }

  it('keeps credentials out of its errors', async () => {
    const port = await closedPort();
    const cache = createCache();
    for (const url of [`http://someone:s3cret-pass@127.0.0.1:${port}/repo.git`, `http://s3cret-token@127.0.0.1:${port}/repo.git`]) {
      const error = await cache.fetch(source(url)).catch((e: unknown) => e);
      expect(error).toMatchObject({ status: 502, code: 'GIT_FAILED' });
      expect((error as Error).message).toMatch(/^git fetch of http:\/\/(someone:)?\*\*\*@127\.0\.0\.1:\d+\/repo\.git failed: /);
      expect((error as Error).message).not.toContain('s3cret');
    }
  });
});

describe('the environment the cache runs git in', () => {
  it('makes git itself refuse ext:: and fd:: even if validation let them through', () => {
    const marker = join(folder, 'pwned');
    for (const protocols of ['https:http:ssh', 'https:http:ssh:file']) {
      for (const url of [`ext::sh -c touch% ${marker}`, 'fd::0']) {
        const result = spawnSync('git', ['ls-remote', '--end-of-options', url], { env: gitEnvironment(protocols, process.env), encoding: 'utf8', timeout: 10_000 });
        expect(result.status).not.toBe(0);
        expect(result.stderr).toMatch(/transport '(ext|fd)' not allowed/);
      }
    }
    expect(existsSync(marker)).toBe(false);
  });

  it('makes git refuse local repositories when they are off', () => {
    commit(origin, { 'a.txt': 'one\n' }, 'one');
    const result = spawnSync('git', ['ls-remote', '--end-of-options', origin], { env: gitEnvironment('https:http:ssh', process.env), encoding: 'utf8' });
    expect(result.stderr).toMatch(/transport 'file' not allowed/);
  });

  it('never lets the worker\'s own git settings through', () => {
    const env = gitEnvironment('https', { PATH: '/usr/bin', HOME: '/home/w', GIT_DIR: '/x', GIT_SSH: '/evil', GIT_ASKPASS: '/evil', EDITOR: 'evil', https_proxy: 'http://proxy:3128' });
    expect(env).toMatchObject({ GIT_ALLOW_PROTOCOL: 'https', GIT_TERMINAL_PROMPT: '0', GIT_ASKPASS: '/bin/false', GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', https_proxy: 'http://proxy:3128' });
    expect(env).not.toHaveProperty('GIT_DIR');
    expect(env).not.toHaveProperty('GIT_SSH');
    expect(env).not.toHaveProperty('EDITOR');
  });
});
