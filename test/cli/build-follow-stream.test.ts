/**
 * `clusterrunner build` follows its build through GET /v2/events (issue 13) and rides out master outages
 * (issue 15 item 6): the real binary against real masters. A small HTTP proxy in front of the master counts
 * the requests, plays an older master without /v2/events (404), or goes away (connection refused).
 */
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { api, cleanupAll, eventually, spawnCli, startTestMaster, startTestWorker, tempDir, type TestMaster } from '../support/cluster.ts';
import { freePort, runCli } from '../support/build-results.ts';
import { readPidFile } from '../../cli/local-cluster.ts';
import { clientSetup, killFromPidFiles, projectWith, type ClientSetup } from './helpers.ts';

const started: ClientSetup[] = [];
const proxies: Server[] = [];

afterEach(async () => {
  for (const setup of started.splice(0)) {
    await runCli(['stop', '-c', setup.conf], { env: setup.env, timeoutMs: 30_000 });
    killFromPidFiles(setup.base);
  }
  for (const server of proxies.splice(0)) closeProxy(server);
  await cleanupAll();
});

const BUILD_TIMEOUT_MS = 90_000;

interface Proxy {
  readonly url: string;
  readonly server: Server;
  /** Paths asked for, in order (with their query). */
  readonly seen: string[];
}

/**
 * Forwards every request to the master; `withoutEvents` answers /v2/events 404 as a master older than SPEC §14;
 * `holdEvents` holds each /v2/events request until it resolves (a client slow to open its stream).
 */
async function proxyTo(master: TestMaster, options: { withoutEvents?: boolean; holdEvents?: () => Promise<void> } = {}): Promise<Proxy> {
  const target = new URL(master.url);
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(req.url ?? '');
    const isEvents = (req.url ?? '').startsWith('/v2/events');
    if (options.withoutEvents === true && isEvents) {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: 'Not found' }));
      return;
    }
    const forward = () => {
      const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', () => res.destroy());
      res.on('close', () => upstream.destroy());
      req.pipe(upstream);
    };
    if (options.holdEvents !== undefined && isEvents) options.holdEvents().then(forward, () => res.destroy());
    else forward();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxies.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, seen };
}

function closeProxy(server: Server): void {
  server.close();
  server.closeAllConnections();
}

const JOB = `
Slow:
  commands:
    - sleep 1.5
    - echo "atom $N"
    - test "$N" != 3
  atomizers:
    - N: seq 1 4
`;

describe('clusterrunner build follows the event stream', () => {
  it('follows its build through /v2/events, reading the build only to start and to report, and exits 1 on FAILURE', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const proxy = await proxyTo(master);
    const client = clientSetup(master.secret);

    const run = await runCli(['build', '--master-url', proxy.url, '-c', client.conf, 'directory', '--project-directory', projectWith(JOB)],
      { env: client.env, timeoutMs: BUILD_TIMEOUT_MS });

    expect(run.code, run.stdout + run.stderr).toBe(1);
    expect(run.stdout).toMatch(/build 1: FAILURE, 4 atoms \(3 passed, 1 failed\)/);
    expect(run.stdout).toMatch(/FAILED atom 2\/0 \(exit code 1\): export N="3";/);
    expect(run.stdout).not.toContain('lost the master');
    expect(proxy.seen.filter((p) => p.startsWith('/v2/events?build_id=1')), run.stdout + run.stderr).toHaveLength(1);
    // Polling asks for the build every 300 ms through a build of several seconds; the stream needs it when
    // it opens, when the atoms become known, and for the report.
    const buildReads = proxy.seen.filter((p) => p === '/v1/build/1');
    expect(buildReads.length, proxy.seen.join('\n')).toBeLessThanOrEqual(4);
  });

  it('reports an atom that failed before its stream opened, while the build still runs', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const gate = join(tempDir('cr-cli-gate-'), 'go');
    // The stream opens only once the first atom has failed: the failure is in the build, not in the stream.
    const proxy = await proxyTo(master, {
      holdEvents: async () => {
        await eventually('the first atom to fail', async () => (await api(master, 'GET', '/v1/build/1/subjob/0/atom/0')).body.atom?.exit_code === 3, 30_000);
      },
    });
    const client = clientSetup(master.secret);
    const project = projectWith(`
Mixed:
  commands:
    - if [ "$N" = 1 ]; then exit 3; fi
    - while [ ! -e ${gate} ]; do sleep 0.1; done
  atomizers:
    - N: seq 1 2
`);
    const run = spawnCli(['build', '--master-url', proxy.url, '-c', client.conf, '--no-results', 'directory', '--project-directory', project], { env: client.env });
    // The second atom runs until the first one's failure is printed.
    await eventually('the failure to be printed while the build runs', () => /FAILED atom 0\/0 \(exit code 3\): export N="1";/.test(run.output()), 30_000);
    writeFileSync(gate, '');
    expect(await run.exited).toBe(1);
    expect(run.output().match(/FAILED atom 0\/0/g)).toHaveLength(1);
    expect(run.output()).toMatch(/build 1: FAILURE, 2 atoms \(1 passed, 1 failed\)/);
  });

  it('polls a master that has no event stream (older than SPEC §14) and exits 0 on SUCCESS', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const proxy = await proxyTo(master, { withoutEvents: true });
    const client = clientSetup(master.secret);

    const run = await runCli(['build', '--master-url', proxy.url, '-c', client.conf, 'directory', '--project-directory', projectWith(JOB.replace('!= 3', '!= 9'))],
      { env: client.env, timeoutMs: BUILD_TIMEOUT_MS });

    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/build 1: SUCCESS, 4 atoms \(4 passed, 0 failed\)/);
    expect(proxy.seen.some((p) => p.startsWith('/v2/events'))).toBe(true);
    expect(proxy.seen.filter((p) => p === '/v1/build/1').length).toBeGreaterThan(1);
  });

  it('gives up on a master out of reach past CLUSTERRUNNER_FOLLOW_GIVE_UP_SECONDS, saying where to look, with exit code 2', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1 });
    const proxy = await proxyTo(master);
    const client = clientSetup(master.secret);
    const cli = spawnCli(['build', '--master-url', proxy.url, '-c', client.conf, 'directory', '--project-directory', projectWith('Long:\n  commands: [sleep 30]\n  atomizers: [{ N: echo 1 }]\n')],
      { env: { ...client.env, CLUSTERRUNNER_FOLLOW_GIVE_UP_SECONDS: '3' } });
    await eventually('the build to run', async () => (await api(master, 'GET', '/v1/build/1')).body.build.status === 'BUILDING', 30_000);
    await eventually('the CLI to follow the stream', () => proxy.seen.some((p) => p.startsWith('/v2/events')));
    closeProxy(proxy.server);

    expect(await cli.exited).toBe(2);
    const output = cli.output();
    expect(output).toMatch(/lost the master at http:\/\/127\.0\.0\.1:\d+ \(.+\); build 1 goes on without us: waiting up to 3 s/);
    expect(output).toContain('has been out of reach for over 3 s');
    expect(output).toContain('the master\'s log on its machine');
    expect(output).toContain('`clusterrunner attach 1` follows it again');
  });

  it('refuses a bad CLUSTERRUNNER_FOLLOW_GIVE_UP_SECONDS, naming it, before starting a build', async () => {
    const client = clientSetup('any-secret');
    const run = await runCli(['build', '--master-url', 'http://127.0.0.1:9', '-c', client.conf, 'directory', '--project-directory', projectWith(JOB)],
      { env: { ...client.env, CLUSTERRUNNER_FOLLOW_GIVE_UP_SECONDS: 'soon' } });
    expect(run.code).toBe(3);
    expect(run.stderr).toContain('CLUSTERRUNNER_FOLLOW_GIVE_UP_SECONDS must be a whole number of seconds from 1 to 86400, not "soon"');
  });
});

describe('clusterrunner build in local mode through a master crash', () => {
  it('says it lost the master, starts the local master again, resumes the stream and exits 1 for the FAILURE', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const secret = 'a-local-secret-for-tests';
    const setup = clientSetup(secret, { master_url: url, port, kill_grace_seconds: 1, heartbeat_interval: 0.5 });
    started.push(setup);
    const local = { url, secret };
    const cli = spawnCli(['build', '-c', setup.conf], { cwd: projectWith(JOB), env: setup.env });

    await eventually('an atom of the build to finish', async () => {
      const subjobs = (await api(local, 'GET', '/v2/builds/1/subjobs')).body.subjobs as { atoms: { state: string }[] }[];
      return subjobs.some((s) => s.atoms.some((a) => a.state === 'COMPLETED'));
    }, 60_000);
    const masterPid = readPidFile(join(setup.base, 'master.pid'));
    expect(masterPid).not.toBeNull();
    process.kill(masterPid!, 'SIGKILL');

    expect(await cli.exited, cli.output()).toBe(1);
    const output = cli.output();
    expect(output).toMatch(new RegExp(`lost the master at ${url.replace(/\./g, '\\.')} \\(.+\\); build 1 goes on without us`));
    expect(output).toContain('the local master is still down: starting it again');
    expect(output).toContain(join(setup.base, 'logs', 'master.log'));
    expect(output).toMatch(/the master at .+ is back after \d+ s; following build 1 again/);
    expect(output).toMatch(/build 1: FAILURE, 4 atoms \(3 passed, 1 failed\)/);
    const newPid = readPidFile(join(setup.base, 'master.pid'));
    expect(newPid).not.toBe(masterPid);
  }, 180_000);
});
