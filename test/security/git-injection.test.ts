/**
 * Security suite: git sources that try option injection or transport helpers, posted to a real master as
 * a user would post them. Each is refused with a 400 naming the field, before any process starts: a `git`
 * first on PATH records every run, and must record none; the files the payloads would create never appear.
 * The payloads include those of the simple-git advisories (CVE-2022-24433, CVE-2022-24066, CVE-2022-25912,
 * CVE-2022-25860) and git's CVE-2017-1000117.
 */
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, cleanupAll, startTestMaster, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { expectFailure } from '../support/http-expect.ts';

const spy = tempDir('cr-git-spy-');
const runs = join(spy, 'runs.log');
const pwned = join(tempDir('cr-pwned-'), 'pwned');
const HEX40 = 'a'.repeat(40);
let master: TestMaster;
const originalPath = process.env['PATH'];

beforeAll(async () => {
  // Logs every git run, then does nothing: none may happen here at all.
  writeFileSync(join(spy, 'git'), `#!/bin/sh\necho "git $*" >> '${runs}'\nexit 1\n`);
  chmodSync(join(spy, 'git'), 0o755);
  process.env['PATH'] = `${spy}:${originalPath ?? ''}`;
  master = await startTestMaster({ conf: { allowLocalRepositories: false } });
});

afterAll(async () => {
  process.env['PATH'] = originalPath;
  await cleanupAll();
});

const touch = `touch ${pwned}`;
const touchEncoded = `touch%20${pwned}`;
const GOOD = { type: 'git', url: 'https://example.invalid/org/repo.git' };

const CASES: readonly [string, Record<string, unknown>, string][] = [
  // Transport helpers.
  ['ext:: helper running a shell', { url: `ext::sh -c ${touch.replace(' ', '% ')}` }, 'url'],
  ['ext:: with the protocol allowed through -c (CVE-2022-25912)', { url: `ext::sh -c ${touch.replace(' ', '% ')}`, branch: '-c protocol.ext.allow=always' }, 'url'],
  ['fd:: helper', { url: 'fd::17' }, 'url'],
  ['fd:: helper with two fds', { url: 'fd::0,1' }, 'url'],
  ['a named transport helper', { url: 'transport+helper::whatever' }, 'url'],
  ['git:: prefix', { url: 'git::https://example.invalid/repo' }, 'url'],
  // Option injection through the url.
  ['-oProxyCommand as the url', { url: `-oProxyCommand=${touch}` }, 'url'],
  ['ssh://-oProxyCommand (CVE-2017-1000117)', { url: `ssh://-oProxyCommand=${touchEncoded}/foo` }, 'url'],
  ['ssh user starting with a dash', { url: 'ssh://-oProxyCommand=x@host/repo' }, 'url'],
  ['ssh host starting with a dash', { url: 'ssh://git@-oProxyCommand=x/repo' }, 'url'],
  ['scp-like host starting with a dash', { url: 'git@-oProxyCommand=x:repo' }, 'url'],
  ['scp-like path starting with --upload-pack', { url: `git@host:--upload-pack=${touch}` }, 'url'],
  ['--upload-pack as the url (CVE-2022-24433)', { url: `--upload-pack=${touch}` }, 'url'],
  ['-u as the url (CVE-2022-24066)', { url: `-u ${touch}` }, 'url'],
  ['an option after the url', { url: `https://example.invalid/repo --upload-pack=${touch}` }, 'url'],
  ['a newline in the url', { url: `https://example.invalid/repo\n--upload-pack=${touch}` }, 'url'],
  ['file:// when local repositories are off', { url: 'file:///etc' }, 'url'],
  ['a local path when local repositories are off', { url: '/etc' }, 'url'],
  ['a url that is not a string', { url: ['ext::sh'] }, 'url'],
  // Option injection through the branch, the hash and the remote.
  ['--upload-pack as the branch (CVE-2022-24433)', { branch: `--upload-pack=${touch}` }, 'branch'],
  ['-u as the branch (CVE-2022-24066)', { branch: `-u ${touch}` }, 'branch'],
  ['--output as the branch', { branch: `--output=${pwned}` }, 'branch'],
  ['-c core.sshCommand as the branch', { branch: `-c core.sshCommand=${touch}` }, 'branch'],
  ['--exec as the branch', { branch: `--exec=${touch}` }, 'branch'],
  ['a branch climbing with ..', { branch: '../../etc/passwd' }, 'branch'],
  ['a reflog expression as the branch', { branch: 'HEAD@{1}' }, 'branch'],
  ['a branch with a newline', { branch: 'main\n--upload-pack=x' }, 'branch'],
  ['--upload-pack as the hash', { hash: `--upload-pack=${touch}` }, 'hash'],
  ['a revision expression as the hash', { hash: `${HEX40}^{commit}` }, 'hash'],
  ['HEAD as the hash', { hash: 'HEAD' }, 'hash'],
  ['--upload-pack as the remote (CVE-2022-25860)', { remote: `--upload-pack=${touch}` }, 'remote'],
  ['-u as the remote (CVE-2022-24066)', { remote: `-u ${touch}` }, 'remote'],
  ['a remote with a path', { remote: '../origin' }, 'remote'],
];

describe('git sources posted to POST /v1/build', () => {
  it.each(CASES)('%s: 400 naming the field, no build, no git run', async (_label, fields, field) => {
    const response = await api(master, 'POST', '/v1/build', { json: { ...GOOD, ...fields } });
    expectFailure(response, 400);
    expect(response.body.error).toContain(`"${field}"`);
  });

  it('started no git process and created nothing, after all of them', async () => {
    expect(existsSync(runs) ? readFileSync(runs, 'utf8') : '').toBe('');
    expect(existsSync(pwned)).toBe(false);
    expect((await api(master, 'GET', '/v1/build')).body.builds).toEqual([]);
    const cache = join(master.base, 'git-cache');
    expect(existsSync(cache) ? readdirSync(cache) : []).toEqual([]);
  });

  it('(the spy works: a well-formed source does reach git)', async () => {
    const response = await api(master, 'POST', '/v1/build', { json: GOOD });
    expect(response.status).toBe(202);
    await waitForBuild(master, response.body.build_id);
    expect(readFileSync(runs, 'utf8')).toMatch(/^git /m);
  });
});
