/**
 * `clusterrunner build … git …`: against a small fake master on loopback that records what it receives (the
 * body the CLI posts with its SPEC §3 keys, its signature, the 202-then-200 artifact download), and once
 * end to end against a real master with a real repository.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NonceCache, verifyRequest } from '../../shared/auth.ts';
import { packDirectory } from '../../shared/archive.ts';
import { cleanupAll, startTestMaster, startTestWorker, tempDir } from '../support/cluster.ts';
import { createRepo } from '../support/git-repo.ts';
import { runCli } from '../support/build-results.ts';
import { clientSetup } from './helpers.ts';

const SECRET = 'the-fake-masters-secret';
let server: Server | null = null;

afterEach(async () => {
  if (server !== null) await new Promise((resolve) => server!.close(resolve));
  server = null;
  await cleanupAll();
});

interface Received {
  readonly method: string;
  readonly path: string;
  readonly body: string;
  readonly isSigned: boolean;
}

/** Build 7: QUEUED at the first GET, SUCCESS after; its archive answers 202 once, then 200. */
async function startFakeMaster(archiveDir: string): Promise<{ url: string; received: Received[] }> {
  const received: Received[] = [];
  const nonces = new NonceCache();
  let buildGets = 0;
  let archiveGets = 0;
  const json = (res: ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(value));
  };
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const isSigned = verifyRequest({
        secret: SECRET, method: req.method!, path: req.url!, body, headers: req.headers, acceptLegacyDigest: false, nonces,
      }) === 'ok';
      received.push({ method: req.method!, path: req.url!, body: body.toString(), isSigned });
      if (req.method === 'POST' && req.url === '/v1/build') return json(res, 202, { build_id: 7, STATUS: 'SUCCESS' });
      if (req.url === '/v1/build/7') {
        buildGets++;
        const isDone = buildGets > 1;
        return json(res, 200, {
          build: {
            id: 7, status: isDone ? 'SUCCESS' : 'QUEUED', result: isDone ? 'SUCCESS' : null, details: null, num_atoms: isDone ? 1 : null,
            num_subjobs: isDone ? 1 : 0, failed_atoms: isDone ? [] : null, artifacts: isDone ? '/v1/build/7/artifacts.tar.gz' : null,
            error_message: null, waiting_for_workers: null, job_name: 'Job', priority: 0, request_params: {}, state_timestamps: { queued: 1 },
          },
          child_routes: {},
        });
      }
      if (req.url === '/v1/build/7/artifacts.tar.gz') {
        archiveGets++;
        if (archiveGets === 1) return json(res, 202, { STATUS: 'NOT_READY', message: 'not yet' });
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        packDirectory(archiveDir).pipe(res);
        return;
      }
      json(res, 404, { STATUS: 'FAILURE', error: `no route ${req.url}` });
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return { url: `http://127.0.0.1:${address.port}`, received };
}

describe('clusterrunner build git', () => {
  it('posts the SPEC §3 body, signed, and downloads the archive once it is ready', async () => {
    const archiveDir = tempDir('cr-cli-archive-');
    mkdirSync(join(archiveDir, 'artifact_0_0'));
    writeFileSync(join(archiveDir, 'artifact_0_0', 'clusterrunner_exit_code'), '0\n');
    const fake = await startFakeMaster(archiveDir);
    const client = clientSetup(SECRET);
    const work = tempDir('cr-cli-work-');
    const hash = 'a'.repeat(40);

    const run = await runCli([
      'build', '--master-url', fake.url, '-c', client.conf, '-j', 'Job',
      '-f', 'data.txt', 'https://files.example/data.txt', '--remote-file', 'model.bin', 'https://files.example/m?x=1&y=2',
      'git', '--url', 'https://git.example/project.git', '--branch', 'dev', '--hash', hash, '--project-directory', 'sub/dir',
    ], { cwd: work, env: client.env });

    expect(run.code, run.stdout + run.stderr).toBe(0);
    const post = fake.received.find((request) => request.method === 'POST');
    expect(post?.isSigned).toBe(true);
    expect(JSON.parse(post!.body)).toEqual({
      type: 'git',
      url: 'https://git.example/project.git',
      branch: 'dev',
      hash,
      project_directory: 'sub/dir',
      job_name: 'Job',
      remote_files: { 'data.txt': 'https://files.example/data.txt', 'model.bin': 'https://files.example/m?x=1&y=2' },
    });
    expect(fake.received.filter((request) => request.path.endsWith('artifacts.tar.gz'))).toHaveLength(2);
    expect(readFileSync(join(work, 'build_results', '7', 'artifact_0_0', 'clusterrunner_exit_code'), 'utf8')).toBe('0\n');
    expect(run.stdout).toContain('build 7: SUCCESS');
  });

  it('sends only what was given: no branch, hash or folder keys when they are left out', async () => {
    const fake = await startFakeMaster(tempDir('cr-cli-archive-'));
    const client = clientSetup(SECRET);
    const run = await runCli(['build', '--master-url', fake.url, '-c', client.conf, 'git', '--url', 'https://git.example/p.git'], { env: client.env });

    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(JSON.parse(fake.received.find((request) => request.method === 'POST')!.body)).toEqual({ type: 'git', url: 'https://git.example/p.git' });
  });

  it('refuses a git build without --url before sending anything', async () => {
    const fake = await startFakeMaster(tempDir('cr-cli-archive-'));
    const client = clientSetup(SECRET);
    const run = await runCli(['build', '--master-url', fake.url, '-c', client.conf, 'git', '--branch', 'dev'], { env: client.env });

    expect(run.code).toBe(3);
    expect(run.stderr).toContain('--url');
    expect(fake.received).toEqual([]);
  });
});

describe('clusterrunner build git against a real master', () => {
  it('builds a branch of a real repository at the given hash and folder', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const job = (word: string) => `Words:\n  commands:\n    - echo "${word} $N" > "$ARTIFACT_DIR/out.txt"\n  atomizers:\n    - N: seq 1 2\n`;
    const repo = createRepo({ 'app/clusterrunner.yaml': job('old') });
    repo.git('checkout', '-q', '-b', 'feature');
    const wanted = repo.commit({ 'app/clusterrunner.yaml': job('wanted') });
    repo.commit({ 'app/clusterrunner.yaml': job('newer') });
    const client = clientSetup(master.secret);
    const work = tempDir('cr-cli-work-');

    const run = await runCli(['build', '--master-url', master.url, '-c', client.conf,
      'git', '--url', repo.dir, '--branch', 'feature', '--hash', wanted, '--project-directory', 'app'], { cwd: work, env: client.env, timeoutMs: 45_000 });

    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(readFileSync(join(work, 'build_results', 'latest', 'artifact_1_0', 'out.txt'), 'utf8')).toBe('wanted 2\n');
  });
});
