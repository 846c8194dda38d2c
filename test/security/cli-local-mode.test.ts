/**
 * Issue 10 items 1, 6 and 12: what local mode trusts on this machine. A program that answers on the local
 * master's port without the secret gets nothing (no build, no worker pointed at it); the master local mode
 * starts listens on loopback only; `stop` signals only the very process it started.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, eventually, startTestMaster, tempDir, writeConf } from '../support/cluster.ts';
import { freePort, runCli } from '../support/build-results.ts';
import { killFromPidFiles } from '../cli/helpers.ts';
import { processStartTime, readPidFile } from '../../cli/local-cluster.ts';
import { identityResponse } from '../../shared/auth.ts';

const servers: Server[] = [];
const bases: string[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
  for (const base of bases.splice(0)) killFromPidFiles(base);
  await cleanupAll();
});

function localConf(port: number): { conf: string; base: string; home: string } {
  const home = tempDir('cr-sec-local-');
  const base = join(home, 'base');
  bases.push(base);
  const conf = writeConf(home, 'client', { general: { secret: 'the-victims-secret-1234', base_directory: base }, master: { port } });
  return { conf, base, home };
}

describe('local mode and an impostor on its port (issue 10 item 1)', () => {
  it('sends no build and starts no worker for a "master" that cannot prove it holds the secret', async () => {
    const port = await freePort();
    const received: string[] = [];
    // What the attack needs: answer GET / like a master, list no worker, and take whatever is posted.
    const impostor = createServer((req, res) => {
      received.push(`${req.method} ${req.url}`);
      res.setHeader('Content-Type', 'application/json');
      if (req.url === '/') return res.end(JSON.stringify({ master: { status: 'Master service is up.', workers: [] } }));
      if (req.url === '/v1/worker') return res.end(JSON.stringify({ workers: [] }));
      if (req.url?.startsWith('/v1/identity')) return res.end(JSON.stringify({ identity: { response: 'f'.repeat(128) } }));
      if (req.method === 'POST') return res.writeHead(202).end(JSON.stringify({ build_id: 1, STATUS: 'SUCCESS' }));
      res.writeHead(404).end('{}');
    });
    servers.push(impostor);
    await new Promise<void>((resolve) => impostor.listen(port, '127.0.0.1', resolve));
    const { conf, base, home } = localConf(port);
    const project = tempDir('cr-sec-project-');
    writeFileSync(join(project, 'clusterrunner.yaml'), 'Job:\n  commands: ["true"]\n  atomizers:\n    - N: echo 1\n');

    const run = await runCli(['build', '-c', conf, 'directory', '--project-directory', project], { env: { HOME: home }, timeoutMs: 120_000 });

    expect(run.code, run.stdout + run.stderr).toBe(3);
    expect(run.stderr).toContain('cannot prove it holds the secret');
    expect(received.filter((line) => !line.startsWith('GET '))).toEqual([]);
    expect(received.some((line) => line.startsWith('GET /v1/identity?challenge='))).toBe(true);
    expect(existsSync(join(base, 'worker.pid'))).toBe(false);
    expect(existsSync(join(base, 'master.pid'))).toBe(false);
  }, 600_000);

  it('a real master answers the challenge with HMAC(secret, challenge) and refuses a malformed one', async () => {
    const master = await startTestMaster();
    const challenge = 'ab'.repeat(32);
    const answer = await api(master, 'GET', `/v1/identity?challenge=${challenge}`);
    expect(answer.status).toBe(200);
    expect(answer.body.identity.response).toBe(identityResponse(master.secret, challenge));
    expect(answer.text).not.toContain(master.secret);
    for (const bad of ['', 'xyz', 'ab', 'AB'.repeat(32), 'a'.repeat(200)]) {
      const refused = await api(master, 'GET', `/v1/identity?challenge=${bad}`);
      expect(refused.status, bad).toBe(400);
      expect(refused.body.error).toContain('challenge');
    }
  }, 600_000);
});

describe('the master local mode starts (issue 10 item 6)', () => {
  it('listens on 127.0.0.1 only', async () => {
    const port = await freePort();
    const { conf, base, home } = localConf(port);
    const project = tempDir('cr-sec-project-');
    writeFileSync(join(project, 'clusterrunner.yaml'), 'Job:\n  commands: ["true"]\n  atomizers:\n    - N: echo 1\n');
    const run = await runCli(['build', '-c', conf, '--no-results', 'directory', '--project-directory', project], { env: { HOME: home }, timeoutMs: 120_000 });
    expect(run.code, run.stdout + run.stderr).toBe(0);
    // /proc/net/tcp: local address as little-endian hex IPv4 and port; state 0A is LISTEN.
    const portHex = port.toString(16).toUpperCase().padStart(4, '0');
    const listening = readFileSync('/proc/net/tcp', 'utf8').split('\n').concat(readFileSync('/proc/net/tcp6', 'utf8').split('\n'))
      .map((line) => line.trim().split(/\s+/))
      .filter((fields) => fields[1]?.endsWith(`:${portHex}`) && fields[3] === '0A')
      .map((fields) => fields[1]!.split(':')[0]);
    expect(listening).toEqual(['0100007F']);
    await runCli(['stop', '-c', conf], { env: { HOME: home }, timeoutMs: 120_000 });
    void base;
  }, 600_000);
});

describe('clusterrunner stop and a reused pid (issue 10 item 12)', () => {
  it('signals nothing when the pid file names a process that is not the one it started, even one called clusterrunner', async () => {
    const { conf, base, home } = localConf(await freePort());
    mkdirSync(base, { recursive: true });
    // An unrelated program whose command line mentions clusterrunner, like `vim clusterrunner.yaml`.
    const bystander = spawn('bash', ['-c', 'exec -a "vim clusterrunner.yaml" sleep 120'], { stdio: 'ignore', detached: true });
    try {
      await eventually('the bystander to run', () => readFileSync(`/proc/${bystander.pid}/cmdline`, 'utf8').includes('clusterrunner'));
      const startTime = processStartTime(bystander.pid!);
      expect(startTime).not.toBeNull();
      // A stale file from an older version (pid only), and one whose start time is another process's.
      writeFileSync(join(base, 'master.pid'), `${bystander.pid}\n`);
      writeFileSync(join(base, 'worker.pid'), `${bystander.pid} ${Number(startTime) + 1}\n`);

      const stop = await runCli(['stop', '-c', conf], { env: { HOME: home }, timeoutMs: 120_000 });

      expect(stop.code, stop.stdout + stop.stderr).toBe(0);
      expect(stop.stdout).toContain('signaled nothing');
      expect(bystander.exitCode).toBeNull();
      expect(bystander.signalCode).toBeNull();
      expect(processStartTime(bystander.pid!)).toBe(startTime);
      expect(readPidFile(join(base, 'master.pid'))).toBeNull();
    } finally {
      process.kill(-bystander.pid!, 'SIGKILL');
    }
  }, 600_000);
});
