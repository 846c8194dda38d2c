/**
 * The daily commands of issue 16 as a user runs them: the real binary against a real master and worker on
 * loopback, each with and without --json, and the exit codes scripts rely on (0 SUCCESS, 1 FAILURE,
 * 2 ERROR/CANCELED, 3 usage or configuration, 4 master unreachable).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, CLI, cleanupAll, eventually, postBuild, spawnCli, startTestMaster, startTestWorker, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { freePort, runCli } from '../support/build-results.ts';
import { clientSetup, projectWith, type ClientSetup } from './helpers.ts';

// Once, at the end: the first group shares one cluster between its tests.
afterAll(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
  await cleanupAll();
});

const servers: Server[] = [];
/** Generous: on a loaded machine one CLI start alone has taken 14 s. */
const BUILD_TIMEOUT_MS = 120_000;
const TEST_TIMEOUT_MS = 600_000;

/**
 * Runs a program without blocking this process: the masters of these tests live in it, and spawnSync
 * would keep them from answering the very command it waits for.
 */
function runProgram(file: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), BUILD_TIMEOUT_MS);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** runCli with a time limit that a busy machine does not reach. */
function runCliSlowly(args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  return runCli(args, { timeoutMs: BUILD_TIMEOUT_MS, ...options });
}

const FAILING_JOB = `
Checks:
  commands:
    - echo "output of atom $N"
    - test "$N" != 2
  atomizers:
    - N: seq 1 3
`;

async function clusterWithClient(executors = 2): Promise<{ master: TestMaster; client: ClientSetup; cli: (args: readonly string[], cwd?: string) => ReturnType<typeof runCli> }> {
  const master = await startTestMaster();
  await startTestWorker(master, { executors });
  const client = clientSetup(master.secret, { master_url: master.url });
  const cli = (args: readonly string[], cwd?: string) => runCliSlowly([...args, '-c', client.conf], { env: client.env, ...(cwd ? { cwd } : {}) });
  return { master, client, cli };
}

async function finishedBuild(master: TestMaster, yaml: string): Promise<any> {
  const id = await postBuild(master, { type: 'directory', project_directory: projectWith(yaml) });
  return waitForBuild(master, id, undefined, BUILD_TIMEOUT_MS);
}

describe('status, list, workers, logs, attach, artifacts', () => {
  let fixture: Awaited<ReturnType<typeof clusterWithClient>>;
  let build: any;
  beforeAll(async () => {
    fixture = await clusterWithClient();
    build = await finishedBuild(fixture.master, FAILING_JOB);
    expect(build.status).toBe('FAILURE');
  }, TEST_TIMEOUT_MS);

  it('status ID: the build, exit code its result; status: the queue and the workers', async () => {
    const { master, cli } = fixture;
    const status = await cli(['status', String(build.id)]);
    expect(status.code, status.stderr).toBe(1);
    expect(status.stdout).toContain(`build ${build.id}: FAILURE, 3 atoms (2 passed, 1 failed)`);
    expect(status.stdout).toContain('failed atom 1/0 (exit code 1): export N="2";');
    const statusJson = await cli(['status', String(build.id), '--json']);
    expect(statusJson.code).toBe(1);
    expect(JSON.parse(statusJson.stdout).build).toMatchObject({ id: build.id, status: 'FAILURE', num_atoms: 3 });

    const overview = await cli(['status']);
    expect(overview.code, overview.stderr).toBe(0);
    expect(overview.stdout).toContain(`master ${master.url}: 0 builds queued or running, 1 worker`);
    const overviewJson = JSON.parse((await cli(['status', '--json'])).stdout);
    expect(overviewJson.queue).toEqual([]);
    expect(overviewJson.workers).toHaveLength(1);
  }, TEST_TIMEOUT_MS);

  it('list and workers, with and without --json', async () => {
    const { cli } = fixture;
    const list = await cli(['list']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`build +${build.id} +FAILURE +job Checks +3 atoms, 1 failed`));
    expect(JSON.parse((await cli(['list', '--json', '--limit', '5'])).stdout).builds.map((listed: any) => listed.id)).toEqual([build.id]);
    const badLimit = await cli(['list', '--limit', '500']);
    expect(badLimit.code).toBe(3);
    expect(badLimit.stderr).toContain('--limit');

    const workers = await cli(['workers']);
    expect(workers.code).toBe(0);
    expect(workers.stdout).toMatch(/worker +\d+ +test-worker-\w+ +alive, 0\/2 executors busy/);
    expect(JSON.parse((await cli(['workers', '--json'])).stdout).workers[0].num_executors).toBe(2);
  }, TEST_TIMEOUT_MS);

  it('logs: one atom or every atom, with and without --json', async () => {
    const { cli } = fixture;
    const oneAtom = await cli(['logs', String(build.id), '--atom', '1/0']);
    expect(oneAtom.code, oneAtom.stderr).toBe(0);
    expect(oneAtom.stdout).toBe('output of atom 2\n');
    expect(JSON.parse((await cli(['logs', String(build.id), '--atom', '1/0', '--json'])).stdout).content).toBe('output of atom 2\n');
    const all = await cli(['logs', String(build.id)]);
    expect(all.stdout).toContain('==> atom 0/0 (exit code 0): export N="1";\noutput of atom 1\n');
    expect(all.stdout).toContain('==> atom 1/0 (exit code 1): export N="2";\noutput of atom 2\n');
    const allJson = JSON.parse((await cli(['logs', String(build.id), '--json'])).stdout);
    expect(allJson.atoms.map((atom: any) => atom.content)).toEqual(['output of atom 1\n', 'output of atom 2\n', 'output of atom 3\n']);
    expect((await cli(['logs', String(build.id), '--atom', 'one'])).code).toBe(3);
  }, TEST_TIMEOUT_MS);

  it('attach: reports the build and fetches its results; artifacts: downloads them', async () => {
    const { cli } = fixture;
    const work = tempDir('cr-cli-work-');
    const attach = await cli(['attach', String(build.id)], work);
    expect(attach.code, attach.stderr).toBe(1);
    expect(attach.stdout).toContain(`build ${build.id}: FAILURE, 3 atoms (2 passed, 1 failed)`);
    expect(attach.stdout).toContain('  | output of atom 2');
    expect(readFileSync(join(work, 'build_results', String(build.id), 'failures.txt'), 'utf8')).toBe('artifact_1_0');
    expect(readlinkSync(join(work, 'build_results', 'latest'))).toBe(String(build.id));
    const attachJson = await cli(['attach', String(build.id), '--json', '--no-results'], work);
    expect(attachJson.code).toBe(1);
    expect(JSON.parse(attachJson.stdout)).toMatchObject({ build: { id: build.id, status: 'FAILURE' }, results: null });

    const into = join(tempDir('cr-cli-out-'), 'artifacts');
    const artifacts = await cli(['artifacts', String(build.id), '-o', into]);
    expect(artifacts.code, artifacts.stderr).toBe(0);
    expect(readFileSync(join(into, 'artifact_1_0', 'clusterrunner_exit_code'), 'utf8')).toBe('1\n');
    const again = await cli(['artifacts', String(build.id), '-o', into]);
    expect(again.code).toBe(3);
    expect(again.stderr).toContain('not empty');
    const artifactsJson = await cli(['artifacts', String(build.id), '--json'], work);
    expect(JSON.parse(artifactsJson.stdout)).toMatchObject({ build_id: build.id, folder: join(work, 'build_results', String(build.id)) });
  }, TEST_TIMEOUT_MS);
});

describe('exit codes, cancel, logs --follow', () => {
  it('exit 0 for SUCCESS, 2 for ERROR, 3 for usage and configuration errors, 4 when no master answers', async () => {
    const { master, client, cli } = await clusterWithClient();
    const passed = await finishedBuild(master, 'Ok:\n  commands:\n    - "true"\n  atomizers:\n    - N: echo 1\n');
    expect((await cli(['status', String(passed.id)])).code).toBe(0);
    const broken = await finishedBuild(master, 'Broken:\n  commands:\n    - "true"\n  atomizers:\n    - N: exit 7\n');
    expect(broken.status).toBe('ERROR');
    const error = await cli(['status', String(broken.id)]);
    expect(error.code).toBe(2);
    expect(error.stdout).toContain('Atomizer command failed!');

    expect((await cli(['status', 'seven'])).code).toBe(3);
    expect((await cli(['list', '--no-such-flag'])).code).toBe(3);
    expect((await runCliSlowly(['no-such-command'], { env: client.env })).code).toBe(3);
    expect((await runCliSlowly(['--help'], { env: client.env })).stdout).toContain('3 usage or configuration error, 4 master unreachable');
    expect((await runCliSlowly(['status', '--help'], { env: client.env })).stdout).toContain('Exit codes: 0 SUCCESS, 1 FAILURE, 2 ERROR or CANCELED');

    const wrongSecret = clientSetup('not-the-masters-secret', { master_url: master.url });
    const refused = await runCliSlowly(['cancel', String(passed.id), '-c', wrongSecret.conf], { env: wrongSecret.env });
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain(`signed with the secret of ${wrongSecret.conf}`);

    const nobody = `http://127.0.0.1:${await freePort()}`;
    for (const args of [['status'], ['list'], ['workers'], ['cancel', '1'], ['status', '1', '--json']]) {
      const run = await cli([...args, '-m', nobody]);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(4);
      expect(run.stderr).toContain(`cannot reach the master at ${nobody}`);
    }
  }, TEST_TIMEOUT_MS);

  it('cancel stops a running build (CANCELED, exit 2 afterwards); logs --follow prints lines as they come until the atom ends', async () => {
    const { master, cli } = await clusterWithClient();
    const gate = join(tempDir('cr-cli-gate-'), 'go');
    const id = await postBuild(master, {
      type: 'directory',
      project_directory: projectWith(`
Slow:
  commands:
    - echo "first line of $N"
    - while [ ! -e ${gate} ]; do sleep 0.1; done
    - echo "last line of $N"
    - if [ "$N" = 2 ]; then sleep 60; fi
  atomizers:
    - N: seq 1 2
`),
    });
    await waitForBuild(master, id, (build) => build.status === 'BUILDING', BUILD_TIMEOUT_MS);
    const follow = spawnCli(['logs', String(id), '--atom', '0/0', '--follow', '-m', master.url, '-c', clientSetup(master.secret).conf]);
    await eventually('the first line to be printed', () => follow.output().includes('first line of 1'), BUILD_TIMEOUT_MS);
    expect(follow.output()).not.toContain('last line');
    writeFileSync(gate, '');
    expect(await follow.exited).toBe(0);
    expect(follow.output()).toBe('first line of 1\nlast line of 1\n');

    const cancel = await cli(['cancel', String(id)]);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(cancel.stdout).toContain(`build ${id}: cancel requested`);
    expect((await waitForBuild(master, id, undefined, BUILD_TIMEOUT_MS)).status).toBe('CANCELED');
    expect((await cli(['status', String(id)])).code).toBe(2);
    expect(JSON.parse((await cli(['cancel', String(id), '--json'])).stdout).build_id).toBe(id);
  }, TEST_TIMEOUT_MS);
});

describe('build output', () => {
  it('in a log: timestamps, each atom as it fails, a summary line with counts', async () => {
    const { master } = await clusterWithClient(2);
    const gate = join(tempDir('cr-cli-gate-'), 'go');
    const project = projectWith(`
Mixed:
  commands:
    - if [ "$N" = 1 ]; then echo "broken"; exit 3; fi
    - while [ ! -e ${gate} ]; do sleep 0.1; done
  atomizers:
    - N: seq 1 2
`);
    const run = spawnCli(['build', '-c', clientSetup(master.secret, { master_url: master.url }).conf, '-m', master.url, '--no-results', 'directory', '--project-directory', project]);
    // The second atom waits until the first one's failure has been printed.
    await eventually('the failure to be printed while the build runs', () => /\d\d:\d\d:\d\d FAILED atom 0\/0 \(exit code 3\): export N="1";/.test(run.output()), BUILD_TIMEOUT_MS);
    writeFileSync(gate, '');
    expect(await run.exited).toBe(1);
    const output = run.output();
    expect(output).toMatch(/\d\d:\d\d:\d\d build \d+: BUILDING/);
    expect(output).toMatch(/build \d+: FAILURE, 2 atoms \(1 passed, 1 failed\) in \d+s/);
    expect(output.indexOf('FAILED atom 0/0')).toBeLessThan(output.indexOf('FAILURE, 2 atoms'));
  }, TEST_TIMEOUT_MS);

  it('on a terminal that reports 0 columns: the live line still shows the build, the running atoms and the time', async () => {
    const { master, client } = await clusterWithClient(2);
    const project = projectWith('Wait:\n  commands:\n    - sleep 1.5\n  atomizers:\n    - N: seq 1 2\n');
    const command = `stty cols 0 rows 0; exec ${CLI} build -m ${master.url} -c ${client.conf} --no-results directory --project-directory ${project}`;
    const run = await runProgram('script', ['-qec', command, '/dev/null'], client.env);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    const frames = run.stdout.split('\r\x1b[2K').filter((frame) => frame.startsWith('build'));
    expect(frames.some((frame) => /^build \d+: BUILDING \d\/2 atoms done +\[[#-]{20}\] \d+s/.test(frame))).toBe(true);
    expect(frames.some((frame) => frame.includes('running 2'))).toBe(true);
    expect(run.stdout).toMatch(/build \d+: SUCCESS, 2 atoms \(2 passed, 0 failed\)/);
  }, TEST_TIMEOUT_MS);

  it('ends quietly when its reader goes away (| head -1): no EPIPE, no stack trace', async () => {
    const { master, client } = await clusterWithClient();
    const build = await finishedBuild(master, 'Loud:\n  commands:\n    - seq 1 20000\n  atomizers:\n    - N: echo 1\n');
    for (const args of [`logs ${build.id}`, 'list', `status ${build.id}`]) {
      const run = await runProgram('bash', ['-c', `set -o pipefail; ${CLI} ${args} -m ${master.url} -c ${client.conf} | head -1`], client.env);
      expect(run.stderr, args).toBe('');
      expect(run.stdout.split('\n')).toHaveLength(2);
      expect(run.status, args).toBe(0);
    }
  }, TEST_TIMEOUT_MS);

  it('says loudly that no atom ran when the atomizers print nothing (the build is still SUCCESS)', async () => {
    const { master, cli } = await clusterWithClient();
    const project = projectWith('Empty:\n  commands:\n    - "true"\n  atomizers:\n    - N: "true"\n');
    const run = await cli(['build', '--no-results', 'directory', '--project-directory', project]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/SUCCESS, 0 atoms/);
    expect(run.stderr).toContain('NO ATOM RAN');
    expect(run.stderr).toContain('allow_no_atoms: false');
    void master;
  }, TEST_TIMEOUT_MS);
});

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

describe('retry', () => {
  it('runs the failed atoms again and follows the build to its new result (when the master has POST /v1/build/:id/retry)', async (context) => {
    const { master, cli } = await clusterWithClient();
    // Atom 2 fails until the test creates the marker, whatever the master retries on its own.
    const marker = join(tempDir('cr-cli-flaky-'), 'fixed');
    const build = await finishedBuild(master, `
Flaky:
  commands:
    - if [ "$N" = 2 ] && [ ! -e ${marker} ]; then exit 1; fi
  atomizers:
    - N: seq 1 2
`);
    expect(build.status).toBe('FAILURE');
    writeFileSync(marker, '');
    // Unsigned: a master with the route refuses it (401) without retrying anything; one without answers 404.
    const probe = await api(master, 'POST', `/v1/build/${build.id}/retry`, { json: {}, sign: false });
    if (probe.status === 404) {
      context.skip('this master has no POST /v1/build/:id/retry yet (SPEC §10)');
      return;
    }
    const run = await cli(['retry', String(build.id), '--no-results']);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain(`build ${build.id}: SUCCESS`);
  }, TEST_TIMEOUT_MS);
});

describe('build parameters', () => {
  it('-e variables reach every atom, setup and teardown; the API shows them, masked when the name looks secret', async () => {
    const { master, cli } = await clusterWithClient();
    const seen = tempDir('cr-cli-seen-');
    const project = projectWith(`
Env:
  setup_build:
    - echo "$GREETING $API_TOKEN" > ${seen}/setup
  commands:
    - echo "$GREETING $API_TOKEN $QUOTED" > "$ARTIFACT_DIR/seen"
  teardown_build:
    - echo "$GREETING" > ${seen}/teardown
  atomizers:
    - N: seq 1 2
`);
    const work = tempDir('cr-cli-work-');
    const run = await cli(['build', '-e', 'GREETING=hello world', '-e', 'API_TOKEN=s3cret', '-e', `QUOTED=it's "quoted" $HOME`, '--priority', '5',
      'directory', '--project-directory', project], work);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    for (const atom of ['artifact_0_0', 'artifact_1_0']) {
      expect(readFileSync(join(work, 'build_results', 'latest', atom, 'seen'), 'utf8')).toBe('hello world s3cret it\'s "quoted" $HOME\n');
    }
    expect(readFileSync(join(seen, 'setup'), 'utf8')).toBe('hello world s3cret\n');
    await eventually('the teardown to run', () => existsSync(join(seen, 'teardown')), BUILD_TIMEOUT_MS);
    expect(readFileSync(join(seen, 'teardown'), 'utf8')).toBe('hello world\n');

    const build = (await api(master, 'GET', '/v1/build')).body.builds.at(-1);
    expect(build.priority).toBe(5);
    expect(build.request_params.environment).toEqual({ GREETING: 'hello world', API_TOKEN: '********', QUOTED: 'it\'s "quoted" $HOME' });
    const subjobs = await api(master, 'GET', `/v1/build/${build.id}/subjob`);
    expect(subjobs.text).not.toContain('s3cret');

    const reserved = await cli(['build', '-e', 'PATH=/evil', 'directory', '--project-directory', project]);
    expect(reserved.code).toBe(3);
    expect(reserved.stderr).toContain('cannot set PATH');
    expect((await cli(['build', '-e', 'no-equals', 'directory', '--project-directory', project])).code).toBe(3);
    expect((await cli(['build', '--priority', 'high', 'directory', '--project-directory', project])).code).toBe(3);
  }, TEST_TIMEOUT_MS);

  it('allow_no_atoms: false makes a build whose atomizers print nothing an ERROR naming them', async () => {
    const { cli } = await clusterWithClient();
    const project = projectWith('Empty:\n  allow_no_atoms: false\n  commands:\n    - "true"\n  atomizers:\n    - N: "true"\n');
    const run = await cli(['build', '--no-results', 'directory', '--project-directory', project]);
    expect(run.code, run.stdout + run.stderr).toBe(2);
    expect(run.stdout).toMatch(/build \d+: ERROR/);
    expect(run.stdout).toContain('N (true) printed nothing');
    expect(run.stdout).toContain('allow_no_atoms: false');
  }, TEST_TIMEOUT_MS);
});
