/**
 * The daily commands of issue 16 (results folders, configuration, validate and completion) as a user runs them: the real binary against a real master and worker on
 * loopback, each with and without --json, and the exit codes scripts rely on (0 SUCCESS, 1 FAILURE,
 * 2 ERROR/CANCELED, 3 usage or configuration, 4 master unreachable).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestMaster, startTestWorker, tempDir } from '../support/cluster.ts';
import { freePort } from '../support/build-results.ts';
import { clientSetup, projectWith } from './helpers.ts';
import { closeAll, servers, TEST_TIMEOUT_MS, runCliSlowly } from './commands-support.ts';

afterAll(closeAll);

describe('build results', () => {
  it('a failed download leaves the results already there (and latest) alone, and says how to get them', async () => {
    const server = createServer((req, res) => {
      const json = (status: number, value: unknown) => res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(value));
      if (req.url === '/v1/build' && req.method === 'POST') return json(202, { build_id: 5, STATUS: 'SUCCESS' });
      if (req.url === '/v1/build/5') {
        return json(200, { build: {
          id: 5, status: 'SUCCESS', result: 'SUCCESS', details: null, num_atoms: 1, num_subjobs: 1, failed_atoms: [], artifacts: '/v1/build/5/artifacts.tar.gz',
          error_message: null, waiting_for_workers: null, job_name: 'Job', priority: 0, request_params: {}, state_timestamps: {},
        }, child_routes: {} });
      }
      // Not a gzip: the download fails while unpacking.
      if (req.url === '/v1/build/5/artifacts.tar.gz') return res.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end('this is not an archive');
      return json(404, { STATUS: 'FAILURE', error: 'no route' });
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const client = clientSetup('a-secret-of-some-length');
    const work = tempDir('cr-cli-work-');
    const results = join(work, 'my-results');
    mkdirSync(join(results, '5'), { recursive: true });
    writeFileSync(join(results, '5', 'kept.txt'), 'from an earlier download');
    symlinkSync('5', join(results, 'latest'));

    const run = await runCliSlowly(['build', '-m', url, '-c', client.conf, '--results', results, 'directory', '--project-directory', work], { cwd: work, env: client.env });
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stderr).toContain('could not download the artifacts of build 5');
    expect(run.stderr).toContain('clusterrunner artifacts 5');
    expect(readFileSync(join(results, '5', 'kept.txt'), 'utf8')).toBe('from an earlier download');
    expect(readlinkSync(join(results, 'latest'))).toBe('5');
    expect(readdirSync(results).sort()).toEqual(['5', 'latest']);
  }, TEST_TIMEOUT_MS);
});

describe('configuration', () => {
  it('-c naming a file that does not exist is an error that creates nothing', async () => {
    const home = tempDir('cr-cli-home-');
    const missing = join(home, 'typo', 'clusterrunner.conf');
    for (const args of [['build', '-c', missing], ['status', '-c', missing], ['stop', '-c', missing]]) {
      const run = await runCliSlowly(args, { env: { HOME: home }, cwd: home });
      expect(run.code, args.join(' ')).toBe(3);
      expect(run.stderr).toContain(`No configuration file at ${missing}`);
    }
    expect(existsSync(join(home, 'typo'))).toBe(false);
    expect(existsSync(join(home, '.clusterrunner'))).toBe(false);
  }, TEST_TIMEOUT_MS);

  it('local mode looks for the master on the port of the conf\'s [master] section', async () => {
    const port = await freePort();
    const master = await startTestMaster({ conf: { port } });
    await startTestWorker(master);
    const dir = tempDir('cr-cli-conf-');
    const conf = join(dir, 'clusterrunner.conf');
    writeFileSync(conf, `[general]\nsecret = ${master.secret}\nbase_directory = ${join(dir, 'base')}\n[master]\nport = ${port}\n`, { mode: 0o600 });
    const run = await runCliSlowly(['status', '-c', conf], { env: { HOME: dir } });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`master http://127.0.0.1:${port}: 0 builds`);
  }, TEST_TIMEOUT_MS);
});

describe('validate', () => {
  it('checks every job and counts the atoms of each atomizer, without a master', async () => {
    const project = projectWith(`
Unit:
  commands:
    - echo $A $B
  atomizers:
    - A: seq 1 3
    - B: printf 'x\\ny\\n'
Lint:
  commands:
    - "true"
  atomizers:
    - L: echo one
`);
    const run = await runCliSlowly(['validate', project]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('job Unit: ok\n  atomizer A: 3 atoms  (seq 1 3)\n  atomizer B: 2 atoms');
    expect(run.stdout).toContain('  5 atoms in all');
    expect(run.stdout).toContain('job Lint: ok');
    const json = JSON.parse((await runCliSlowly(['validate', project, '--json'])).stdout);
    expect(json.valid).toBe(true);
    expect(json.jobs.map((job: any) => [job.name, job.atoms])).toEqual([['Unit', 5], ['Lint', 1]]);
    const one = await runCliSlowly(['validate', '-j', 'Lint'], { cwd: project });
    expect(one.stdout).not.toContain('Unit');
  }, TEST_TIMEOUT_MS);

  it('exits 3 naming the problem: a bad key, a failing atomizer, no atom with allow_no_atoms: false, no file', async () => {
    const badKey = await runCliSlowly(['validate', projectWith('Job:\n  commands: ["true"]\n  atomizers:\n    - N: echo 1\n  retires: 2\n')]);
    expect(badKey.code).toBe(3);
    expect(badKey.stdout).toContain('unknown key "retires"');

    const failing = await runCliSlowly(['validate', projectWith('Job:\n  commands: ["true"]\n  atomizers:\n    - N: echo nope >&2; exit 4\n')]);
    expect(failing.code).toBe(3);
    expect(failing.stdout).toContain('Exit code: 4');
    expect(failing.stdout).toContain('nope');

    const empty = await runCliSlowly(['validate', projectWith('Job:\n  commands: ["true"]\n  allow_no_atoms: false\n  atomizers:\n    - N: "true"\n')]);
    expect(empty.code).toBe(3);
    expect(empty.stdout).toContain('allow_no_atoms is false');

    const none = await runCliSlowly(['validate', tempDir('cr-cli-nothing-')]);
    expect(none.code).toBe(3);
    expect(none.stderr).toContain('no clusterrunner.yaml');

    const bad = JSON.parse((await runCliSlowly(['validate', projectWith('Job: [1, 2\n'), '--json'])).stdout);
    expect(bad.valid).toBe(false);
  }, TEST_TIMEOUT_MS);
});

describe('completion', () => {
  it('prints a bash script that bash accepts and that completes the commands and their flags', async () => {
    const run = await runCliSlowly(['completion', 'bash']);
    expect(run.code).toBe(0);
    const check = spawnSync('bash', ['-c', `${run.stdout}\nCOMP_WORDS=(clusterrunner lo); COMP_CWORD=1; _clusterrunner; echo "\${COMPREPLY[*]}"; COMP_WORDS=(clusterrunner logs --fo); COMP_CWORD=2; _clusterrunner; echo "\${COMPREPLY[*]}"`], { encoding: 'utf8' });
    expect(check.stderr).toBe('');
    expect(check.stdout).toBe('logs\n--follow\n');
    const zsh = await runCliSlowly(['completion', 'zsh']);
    expect(zsh.code).toBe(0);
    expect(zsh.stdout).toContain('#compdef clusterrunner');
    expect(zsh.stdout).toContain("'validate:check clusterrunner.yaml");
    expect((await runCliSlowly(['completion', 'fish'])).code).toBe(3);
  }, TEST_TIMEOUT_MS);
});

