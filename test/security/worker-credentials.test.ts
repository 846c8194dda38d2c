/**
 * Security suite, issue 10 item 9 (worker side): git credentials never appear on a command line (every local
 * user can read those with `ps`), and what a worker writes under its base_directory is for its user only.
 */
import { chmodSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GitCache } from '../../shared/git.ts';
import { cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

describe('git credentials', () => {
  it('reach the server through the credential helper, never through git\'s arguments', async () => {
    // A server that asks for Basic authentication and records what it is given.
    const authorizations: string[] = [];
    const server = createServer((req, res) => {
      if (req.headers.authorization) authorizations.push(Buffer.from(req.headers.authorization.replace(/^Basic /, ''), 'base64').toString());
      res.writeHead(req.headers.authorization ? 404 : 401, { 'WWW-Authenticate': 'Basic realm="repo"' }).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;

    // Every git started records its arguments, as `ps` would show them.
    const spy = tempDir('cr-git-argv-');
    const argvLog = join(spy, 'argv.log');
    writeFileSync(join(spy, 'git'), `#!/bin/sh\necho "git $*" >> '${argvLog}'\nexec /usr/bin/git "$@"\n`);
    chmodSync(join(spy, 'git'), 0o755);
    const originalPath = process.env['PATH'];
    process.env['PATH'] = `${spy}:${originalPath ?? ''}`;
    try {
      const cache = new GitCache({ root: tempDir('cr-git-cache-'), timeoutMs: 30_000, allowLocalRepositories: false });
      const error = await cache.fetch({ url: `http://alice:pa%2Fss-w0rd-42@127.0.0.1:${port}/repo.git`, branch: 'master', hash: null, remote: 'origin' })
        .then(() => null, (caught: unknown) => caught as Error);
      expect(error).not.toBeNull();
      expect(error!.message).not.toContain('pa%2Fss-w0rd-42');
    } finally {
      process.env['PATH'] = originalPath;
      server.close();
    }
    const argv = readFileSync(argvLog, 'utf8');
    expect(argv).toContain(`http://127.0.0.1:${port}/repo.git`);
    expect(argv).not.toContain('w0rd');
    expect(argv).not.toContain('alice');
    expect(authorizations).toContain('alice:pa/ss-w0rd-42');
  });
});

/** Every path under `dir` whose mode lets group or others in. */
function openToOthers(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const path = join(entry.parentPath, entry.name);
    if (entry.isSymbolicLink()) continue;
    if ((statSync(path).mode & 0o077) !== 0) found.push(`${path} ${(statSync(path).mode & 0o777).toString(8)}`);
  }
  return found;
}

describe('the worker\'s files', () => {
  it('under base_directory are for its user only, including what builds write', async () => {
    const master = await startTestMaster();
    const base = tempDir('cr-worker-');
    await startTestWorker(master, { base });
    const project = tempDir('cr-project-');
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: {
        setup_build: ['echo set up > "$PROJECT_DIR/../setup-output" || true'],
        commands: ['mkdir -p "$ARTIFACT_DIR/sub" && echo "$N" > "$ARTIFACT_DIR/sub/out-$N"'],
        atomizers: [{ N: 'seq 1 2' }],
      },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    for (const dir of ['worker', 'git-cache']) expect(statSync(join(base, dir)).mode & 0o777, dir).toBe(0o700);
    expect(openToOthers(join(base, 'worker'))).toEqual([]);
  });
});
