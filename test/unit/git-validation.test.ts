import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterRunnerError } from '../../shared/errors.ts';
import { GitCache, maskGitUrl, repositoryKey, validateGitSource, type GitSource } from '../../shared/git.ts';

const GOOD: GitSource = { url: 'https://github.com/box/ClusterRunner.git', branch: 'master', hash: null, remote: 'origin' };
const HEX40 = 'a'.repeat(40);

/** The error validateGitSource throws, checked to be a 400 ClusterRunnerError. */
function refusal(source: Partial<GitSource>, allowLocalRepositories = false): ClusterRunnerError {
  try {
    validateGitSource({ ...GOOD, ...source }, { allowLocalRepositories });
  } catch (error) {
    expect(error).toBeInstanceOf(ClusterRunnerError);
    expect((error as ClusterRunnerError).status).toBe(400);
    return error as ClusterRunnerError;
  }
  throw new Error(`expected a refusal of ${JSON.stringify(source)}`);
}

function accepts(source: Partial<GitSource>, allowLocalRepositories = false): void {
  expect(() => validateGitSource({ ...GOOD, ...source }, { allowLocalRepositories })).not.toThrow();
}

describe('validateGitSource: url', () => {
  it.each([
    'https://github.com/box/ClusterRunner.git',
    'http://git.example.com:8080/path/to/repo',
    'https://user:p%40ss@github.com/org/repo.git',
    'https://ghp_0123456789abcdef@github.com/org/repo',
    'https://git.example.com/repo.git?ref=1',
    'ssh://git@github.com/org/repo.git',
    'ssh://git@git.example.com:2222/~/repo.git',
    'ssh://[::1]/srv/repo.git',
    'ssh://host.example/srv/repo.git',
    'git@github.com:org/repo.git',
    'deploy_user@10.0.0.1:/srv/git/repo.git',
    'git@[fe80::1]:repo.git',
  ])('accepts %s', (url) => {
    accepts({ url });
    accepts({ url }, true);
  });

  it.each(['file:///srv/git/repo.git', '/srv/git/repo', '/srv/git/repo.git/', '/srv/a::b'])('accepts %s only when local repositories are allowed', (url) => {
    accepts({ url }, true);
    expect(refusal({ url }).message).toMatch(/^"url" must be an https:\/\/, http:\/\/, ssh:\/\/ or user@host:path git URL/);
  });

  const HOSTILE_URLS: readonly string[] = [
    'ext::sh -c touch% /tmp/pwned',
    'ext::sh',
    'fd::17',
    'fd::0,1',
    'git::https://example.com/repo',
    'https::example.com/repo',
    'transport+helper::whatever',
    '-oProxyCommand=touch /tmp/x',
    '--upload-pack=touch /tmp/x',
    '-u touch /tmp/x',
    '-',
    'ssh://-oProxyCommand=x/y',
    'ssh://-oProxyCommand=touch%20/tmp/x/y',
    'ssh://-user@host/repo',
    'ssh://git@-host/repo',
    'ssh://host',
    'ssh://user:password@host/repo',
    'git@-oProxyCommand=x:y',
    '-oProxyCommand=x@host:repo',
    'git@host:-path',
    'git@host:--upload-pack=touch /tmp/x',
    'git@host:',
    'https://-host/repo',
    'https://-user@host/repo',
    'https://a@b@host/repo',
    'https://@host/repo',
    'https://host/repo --upload-pack=touch /tmp/x',
    'https://host/repo\nx',
    'https://host/repo\rx',
    'https://host/repo\tx',
    'https://host/repo\u0000',
    'https://host/repo\u2028x',
    'https://host/repo\u200bx',
    'https://ho st/repo',
    ' https://host/repo',
    'HTTPS://host/repo',
    'git://host/repo.git',
    'ftp://host/repo.git',
    'foo://host/repo.git',
    'relative/path',
    './repo',
    '../repo',
    '~/repo',
    'repo',
    'C:\\repo',
    'host:repo',
    '',
    `https://host/${'a'.repeat(4096)}`,
  ];

  it.each(HOSTILE_URLS)('refuses %j, naming the field', (url) => {
    expect(refusal({ url }).message).toBe(
      '"url" must be an https://, http://, ssh:// or user@host:path git URL (file:// and local paths only when allow_local_repositories is on).',
    );
  });

  it.each(['file:///etc', '/abs/path', 'file://localhost/etc', 'file://relative', 'file:relative'])('refuses %j when local repositories are off', (url) => {
    expect(refusal({ url }).message).toMatch(/^"url"/);
  });

  it.each(['ext::sh -c touch% /tmp/pwned', 'fd::17', 'relative/path', '-oProxyCommand=x', 'file://localhost/etc', 'file:relative', '/srv/repo\n/x'])(
    'refuses %j even when local repositories are on',
    (url) => {
      expect(refusal({ url }, true).message).toMatch(/^"url"/);
    },
  );

  it('refuses a url that is not a string', () => {
    expect(refusal({ url: 42 as unknown as string }).message).toMatch(/^"url"/);
  });
});

describe('validateGitSource: branch', () => {
  it.each(['master', 'main', 'feature/x-1', 'release-1.2', 'user/jdoe/fix_3', 'refs/heads/main', 'refs/pull/12/head', 'v1.0', 'ünïcode', 'a'.repeat(255)])(
    'accepts %j',
    (branch) => accepts({ branch }),
  );

  it.each([
    '--upload-pack=x', '-x', '-', 'a..b', '..', 'a b', ' a', '@{-1}', 'a@{u}', '@', 'refs/heads/x.lock', 'x.lock', '', '/x', 'x/', 'a//b',
    'x.', '.hidden', 'a/.b', 'a~1', 'a^', 'a^{commit}', 'a:b', 'a?', 'a*', 'a[b', 'a\\b', 'a\nb', 'a\tb', 'a\u0000', 'a\u007f', 'a\u200bb',
    'a'.repeat(256),
  ])('refuses %j, naming the field', (branch) => {
    expect(refusal({ branch }).message).toMatch(/^"branch" must be a git branch or ref name/);
  });
});

describe('validateGitSource: hash', () => {
  it.each([null, HEX40, '0123456789abcdef0123456789abcdef01234567', 'f'.repeat(64)])('accepts %j', (hash) => accepts({ hash }));

  it.each(['abc', 'HEAD', 'master', 'A'.repeat(40), 'a'.repeat(39), 'a'.repeat(41), 'a'.repeat(63), 'g'.repeat(40), `${HEX40}\n`, ` ${HEX40}`,
    `--upload-pack=${HEX40}`, `${HEX40}^{commit}`, ''])('refuses %j, naming the field', (hash) => {
    expect(refusal({ hash }).message).toBe('"hash" must be a commit id: 40 or 64 lower-case hex characters.');
  });
});

describe('validateGitSource: remote', () => {
  it.each(['origin', 'upstream', 'my-remote_2.x', 'A', 'r'.repeat(100)])('accepts %j', (remote) => accepts({ remote }));

  it.each(['-x', '--upload-pack=x', 'a/b', '', '.x', '_x', 'a b', 'a..b', 'x.lock', 'x.', 'r'.repeat(101), 'a\nb', 'a:b', 'a*'])(
    'refuses %j, naming the field',
    (remote) => {
      expect(refusal({ remote }).message).toMatch(/^"remote" must be a remote name/);
    },
  );
});

describe('repositoryKey', () => {
  const SAFE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

  it('is stable, readable and filesystem-safe', () => {
    const key = repositoryKey('https://github.com/box/ClusterRunner.git');
    expect(key).toBe(repositoryKey('https://github.com/box/ClusterRunner.git'));
    expect(key).toMatch(/^box-ClusterRunner-[0-9a-f]{20}$/);
    for (const url of ['git@github.com:org/repo.git', 'ssh://[::1]/srv/r', '/srv/git/x', `https://h/${'ü'.repeat(300)}`, 'https://h/', 'https://h/..', 'https://h/.git']) {
      const other = repositoryKey(url);
      expect(other).toMatch(SAFE);
      expect(other.length).toBeLessThanOrEqual(100);
    }
  });

  it('gives spellings of one repository one key, and different repositories different keys', () => {
    const key = repositoryKey('https://github.com/org/repo');
    expect(repositoryKey('https://GitHub.com/org/repo/')).toBe(key);
    expect(repositoryKey('https://user:secret@github.com/org/repo')).toBe(key);
    expect(repositoryKey('file:///srv/git/repo')).toBe(repositoryKey('/srv/git/repo'));
    expect(repositoryKey('/srv/git/repo/')).toBe(repositoryKey('/srv/git/repo'));
    expect(repositoryKey('https://github.com/org/Repo')).not.toBe(key);
    expect(repositoryKey('http://github.com/org/repo')).not.toBe(key);
    expect(repositoryKey('/srv/git/repo.git')).not.toBe(repositoryKey('/srv/git/repo'));
    expect(repositoryKey('alice@host:repo')).not.toBe(repositoryKey('bob@host:repo'));
  });

  it('never puts credentials in the key', () => {
    expect(repositoryKey('https://me:hunter2@example.com/r.git')).not.toContain('hunter2');
    expect(repositoryKey('https://ghp_secrettoken@example.com/r.git')).not.toContain('secrettoken');
  });
});

describe('maskGitUrl', () => {
  it.each([
    ['https://me:hunter2@example.com/r.git', 'https://me:***@example.com/r.git'],
    ['https://ghp_token@example.com/r.git', 'https://***@example.com/r.git'],
    ['https://example.com/r.git', 'https://example.com/r.git'],
    ['ssh://git@example.com/r.git', 'ssh://git@example.com/r.git'],
    ['git@example.com:r.git', 'git@example.com:r.git'],
  ])('shows %s as %s', (url, shown) => {
    expect(maskGitUrl(url)).toBe(shown);
  });
});

describe('GitCache refuses hostile sources before starting git', () => {
  const folders: string[] = [];
  afterEach(() => {
    for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
  });

  function setup(allowLocalRepositories: boolean): { cache: GitCache; root: string; marker: string } {
    const folder = mkdtempSync(join(tmpdir(), 'cr-git-validation-'));
    folders.push(folder);
    const root = join(folder, 'cache');
    return { cache: new GitCache({ root, timeoutMs: 10_000, allowLocalRepositories }), root, marker: join(folder, 'pwned') };
  }

  it.each([true, false])('with local repositories %s', async (allowLocalRepositories) => {
    const { cache, root, marker } = setup(allowLocalRepositories);
    const payloads: Partial<GitSource>[] = [
      { url: `ext::sh -c touch% ${marker}` },
      { url: `ext::sh -c touch% ${marker}`, branch: 'master' },
      { url: `--upload-pack=touch ${marker}` },
      { url: `-oProxyCommand=touch ${marker}` },
      { url: `ssh://-oProxyCommand=touch%20${marker}/y` },
      { url: `git@-oProxyCommand=touch:${marker}` },
      { branch: `--upload-pack=touch ${marker}` },
      { remote: `--upload-pack=touch ${marker}` },
      { hash: `--upload-pack=touch ${marker}` },
    ];
    for (const payload of payloads) {
      const source = { ...GOOD, ...payload };
      // Refused synchronously, before any GitCache call…
      expect(() => validateGitSource(source, { allowLocalRepositories })).toThrow(ClusterRunnerError);
      // …and GitCache refuses it the same way, before creating anything or running git.
      await expect(cache.fetch(source)).rejects.toMatchObject({ status: 400, code: 'INVALID_GIT_SOURCE' });
      await expect(cache.checkout(source, HEX40, join(root, 'co'))).rejects.toMatchObject({ status: 400 });
    }
    await expect(cache.hasCommit(`ext::sh -c touch% ${marker}`, HEX40)).rejects.toMatchObject({ status: 400 });
    await expect(cache.hasCommit(GOOD.url, `--upload-pack=touch ${marker}`)).rejects.toMatchObject({ status: 400 });
    await expect(cache.checkout(GOOD, `--upload-pack=touch ${marker}`, join(root, 'co'))).rejects.toMatchObject({ status: 400 });
    expect(existsSync(marker)).toBe(false);
    expect(existsSync(root)).toBe(false);
  });

  it('refuses local repositories when they are off, creating nothing', async () => {
    const { cache, root } = setup(false);
    await expect(cache.fetch({ ...GOOD, url: '/etc' })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/^"url"/) });
    await expect(cache.fetch({ ...GOOD, url: 'file:///etc' })).rejects.toMatchObject({ status: 400 });
    expect(existsSync(root) ? readdirSync(root) : []).toEqual([]);
  });
});
