import { afterEach, describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { createRepo } from '../support/git-repo.ts';
import { downloadArtifacts, listFiles, readText } from '../support/build-results.ts';

afterEach(cleanupAll);

/**
 * Every out.txt of a build, sorted. Later builds of a job have timing history, so their atoms may be grouped
 * and reordered: the outputs are looked for wherever the plan put them.
 */
async function outputsOf(master: { url: string; secret: string }, id: number): Promise<string[]> {
  const out = await downloadArtifacts(master, id);
  return listFiles(out).filter((file) => file.endsWith('/out.txt')).map((file) => readText(out, file)).sort();
}

const job = (word: string) =>
  `Hello:\n  commands:\n    - echo "${word} $N" > $ARTIFACT_DIR/out.txt\n  atomizers:\n    - N: seq 1 2\n` +
  `Other:\n  commands:\n    - "true"\n  atomizers:\n    - N: seq 1 3\n`;

describe('git projects', () => {
  it('builds a branch head, an older hash, and a sub-folder, at the exact commit', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const repo = createRepo({ 'clusterrunner.yaml': job('first'), 'sub/clusterrunner.yaml': job('sub') });
    const first = repo.head();
    repo.git('checkout', '-q', '-b', 'feature');
    repo.commit({ 'clusterrunner.yaml': job('feature') });
    repo.git('checkout', '-q', 'master');
    repo.commit({ 'clusterrunner.yaml': job('second') });

    const cases = [
      { params: {}, expected: 'second' },
      { params: { branch: 'feature' }, expected: 'feature' },
      { params: { hash: first }, expected: 'first' },
      { params: { project_directory: 'sub' }, expected: 'sub' },
    ];
    for (const { params, expected } of cases) {
      const id = await postBuild(master, { type: 'git', url: repo.dir, job_name: 'Hello', ...params });
      const build = await waitForBuild(master, id);
      expect(build.status, JSON.stringify(params)).toBe('SUCCESS');
      expect(await outputsOf(master, id), JSON.stringify(params)).toEqual([`${expected} 1\n`, `${expected} 2\n`]);
    }
  });

  it('picks a job by name and explains when it must', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const repo = createRepo({ 'clusterrunner.yaml': job('x') });
    const other = await waitForBuild(master, await postBuild(master, { type: 'git', url: repo.dir, job_name: 'Other' }));
    expect(other).toMatchObject({ status: 'SUCCESS', num_atoms: 3 });
    const unnamed = await waitForBuild(master, await postBuild(master, { type: 'git', url: repo.dir }));
    expect(unnamed.status).toBe('ERROR');
    expect(unnamed.error_message).toContain('Specify one of the following job names: Hello, Other');
  });

  it('reports an unknown branch or hash as ERROR naming it', async () => {
    const master = await startTestMaster();
    const repo = createRepo({ 'clusterrunner.yaml': job('x') });
    const branch = await waitForBuild(master, await postBuild(master, { type: 'git', url: repo.dir, branch: 'no-such-branch' }));
    expect(branch.status).toBe('ERROR');
    expect(branch.error_message).toContain('no-such-branch');
    const hash = await waitForBuild(master, await postBuild(master, { type: 'git', url: repo.dir, hash: 'f'.repeat(40) }));
    expect(hash.status).toBe('ERROR');
    expect(hash.error_message).toContain('f'.repeat(40));
  });

  it('reuses the master\'s and the worker\'s repository cache for the next build', async () => {
    const master = await startTestMaster();
    const workerBase = tempDir('cr-worker-');
    await startTestWorker(master, { base: workerBase });
    const repo = createRepo({ 'clusterrunner.yaml': job('one') });
    expect((await waitForBuild(master, await postBuild(master, { type: 'git', url: repo.dir, job_name: 'Hello' }))).status).toBe('SUCCESS');
    const masterCache = readdirSync(join(master.base, 'git-cache'));
    const workerCache = readdirSync(join(workerBase, 'git-cache'));
    expect(masterCache).toHaveLength(1);
    expect(workerCache).toHaveLength(1);
    repo.commit({ 'clusterrunner.yaml': job('two') });
    const id = await postBuild(master, { type: 'git', url: repo.dir, job_name: 'Hello' });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    expect(await outputsOf(master, id)).toEqual(['two 1\n', 'two 2\n']);
    expect(readdirSync(join(master.base, 'git-cache'))).toEqual(masterCache);
    expect(readdirSync(join(workerBase, 'git-cache'))).toEqual(workerCache);
  });

  it('runs on a worker that cannot reach the repository, from the master\'s snapshot', async () => {
    const master = await startTestMaster();
    const repo = createRepo({ 'clusterrunner.yaml': job('snap'), 'data/input.txt': 'hello\n' });
    const worker = await startTestWorker(master, { allowLocalRepositories: false });
    const id = await postBuild(master, {
      type: 'git', url: repo.dir,
      config: { commands: ['cat $PROJECT_DIR/data/input.txt > $ARTIFACT_DIR/copy.txt', 'test ! -e $PROJECT_DIR/.git'], atomizers: [{ N: 'seq 1 1' }] },
    });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('SUCCESS');
    expect(readText(await downloadArtifacts(master, id), 'artifact_0_0/copy.txt')).toBe('hello\n');
    expect(worker).toBeDefined();
  });

  it('downloads remote_files into the project before setup', async () => {
    const server = createServer((req, res) => {
      if (req.url === '/data.txt') res.end('remote content\n');
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const master = await startTestMaster();
      await startTestWorker(master);
      const repo = createRepo({ 'clusterrunner.yaml': job('x') });
      const id = await postBuild(master, {
        type: 'git', url: repo.dir,
        remote_files: { 'data.txt': `http://127.0.0.1:${port}/data.txt` },
        config: { setup_build: ['cp $PROJECT_DIR/data.txt $PROJECT_DIR/seen-at-setup.txt'], commands: ['cp $PROJECT_DIR/seen-at-setup.txt $ARTIFACT_DIR/'], atomizers: [{ N: 'echo 1' }] },
      });
      expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
      expect(readText(await downloadArtifacts(master, id), 'artifact_0_0/seen-at-setup.txt')).toBe('remote content\n');
      const missing = await postBuild(master, {
        type: 'git', url: repo.dir, remote_files: { 'nope.txt': `http://127.0.0.1:${port}/nope` }, job_name: 'Hello',
      });
      const failed = await waitForBuild(master, missing);
      expect(failed.status).toBe('ERROR');
      expect(failed.error_message).toMatch(/nope\.txt.*404/s);
    } finally {
      server.close();
    }
  });

  describe('refuses hostile input before any process starts', () => {
    const marker = join(tempDir('cr-marker-'), 'pwned');
    const hostile: [string, Record<string, unknown>][] = [
      ['ext:: transport', { url: `ext::sh -c touch% ${marker}` }],
      ['fd:: transport', { url: 'fd::17' }],
      ['option as url', { url: `-oProxyCommand=touch ${marker}` }],
      ['upload-pack as url', { url: `--upload-pack=touch ${marker}` }],
      ['option as ssh host', { url: `ssh://-oProxyCommand=touch%20${marker}/x` }],
      ['option as scp host', { url: `git@-oProxyCommand=touch:${marker}` }],
      ['relative path', { url: 'some/relative/path' }],
      ['newline in url', { url: 'https://example.com/r\n--upload-pack=x' }],
      ['option as branch', { url: '/tmp/x', branch: `--upload-pack=touch ${marker}` }],
      ['dash branch', { url: '/tmp/x', branch: '-b' }],
      ['.. in branch', { url: '/tmp/x', branch: 'a..b' }],
      ['reflog branch', { url: '/tmp/x', branch: '@{-1}' }],
      ['short hash', { url: '/tmp/x', hash: 'abc123' }],
      ['option as remote', { url: '/tmp/x', remote: `--upload-pack=touch ${marker}` }],
      ['path in remote', { url: '/tmp/x', remote: 'a/b' }],
      ['escaping project_directory', { url: '/tmp/x', project_directory: '../../etc' }],
      ['absolute project_directory', { url: '/tmp/x', project_directory: '/etc' }],
    ];
    it.each(hostile)('%s', async (_name, params) => {
      const master = await startTestMaster();
      const response = await api(master, 'POST', '/v1/build', { json: { type: 'git', ...params } });
      expect(response.status).toBe(400);
      expect(response.body.error).toMatch(/url|branch|hash|remote|project_directory/);
      expect((await api(master, 'GET', '/v1/build')).body.builds).toEqual([]);
      expect(existsSync(marker)).toBe(false);
    });

    it('file:// and local paths when allow_local_repositories is off', async () => {
      const master = await startTestMaster({ conf: { allowLocalRepositories: false } });
      for (const url of ['/tmp/repo', 'file:///tmp/repo']) {
        const response = await api(master, 'POST', '/v1/build', { json: { type: 'git', url } });
        expect(response.status).toBe(400);
        expect(response.body.error).toContain('url');
      }
    });
  });
});
