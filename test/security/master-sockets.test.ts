/**
 * Security suite, issue 10 item 4: sockets held for ever. A master started with 256 file descriptors keeps
 * serving signed requests while one address floods it with refused upgrades it never closes and with
 * connections that send nothing; a download that is never read is destroyed after http_send_timeout_seconds.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { signRequest } from '../../shared/auth.ts';
import { CLI, api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild, writeConf } from '../support/cluster.ts';
import { freePort } from '../support/build-results.ts';

const stops: (() => void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) stop();
  await cleanupAll();
});

/** A socket from `localAddress` that never ends its side: the master must close it. */
function floodSocket(port: number, localAddress: string, request: string | null): Promise<Socket> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress, allowHalfOpen: true });
    socket.on('error', () => undefined);
    socket.on('connect', () => {
      if (request !== null) socket.write(request);
      resolve(socket);
    });
    // Refused at once (over a limit) also counts as handled.
    socket.on('close', () => resolve(socket));
  });
}

/** Whether the master's end of the connection to clientPort is still established (state 01 in /proc/net/tcp). */
function masterSideOpen(masterPort: number, clientPort: number): boolean {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1).some((line) => {
    const [, local, remote, state] = line.trim().split(/\s+/);
    return local?.endsWith(`:${hex(masterPort)}`) === true && remote?.endsWith(`:${hex(clientPort)}`) === true && state === '01';
  });
}

describe('a flood of held sockets', () => {
  it('a master with ulimit -n 256 keeps serving signed requests while one address opens 300 sockets it never closes', async () => {
    const base = tempDir('cr-flood-');
    const port = await freePort();
    const secret = 'flood-test-secret';
    const conf = writeConf(base, 'master', {
      general: { secret, base_directory: base },
      master: {
        port, authenticate_reads: true, max_connections: 180, max_connections_per_address: 60,
        http_send_timeout_seconds: 3, http_headers_timeout_seconds: 2, http_request_timeout_seconds: 4,
      },
    });
    const logPath = join(base, 'master.log');
    const fd = openSync(logPath, 'a');
    const child = spawn('bash', ['-c', `ulimit -n 256; exec "${CLI}" master -c "${conf}" -p ${port}`],
      { detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, NODE_ENV: 'production' } });
    closeSync(fd);
    const flood: Socket[] = [];
    stops.push(() => {
      for (const socket of flood) socket.destroy();
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    });
    const signedGet = async (path: string) => fetch(`http://127.0.0.1:${port}${path}`, { headers: signRequest(secret, 'GET', path) });
    await eventually('the master to answer', async () => (await signedGet('/v1/version')).ok, 60_000);
    expect(readFileSync(`/proc/${child.pid}/limits`, 'utf8')).toMatch(/Max open files\s+256\s/);

    const descriptors = () => readdirSync(`/proc/${child.pid}/fd`).length;
    const before = descriptors();
    for (let i = 0; i < 300; i++) {
      // Half ask to upgrade on a path that is not the workers' (refused with a 404 the peer never closes), half send nothing.
      const request = i % 2 === 0 ? 'GET /not-the-worker-path HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n' : null;
      flood.push(await floodSocket(port, '127.0.0.2', request));
    }
    // Another address is served meanwhile, signed.
    for (const path of ['/v1/version', '/v1/build', '/v1']) {
      const response = await signedGet(path);
      expect(response.status, path).toBe(200);
    }
    // And the master gives every flood socket up itself (refused over the limits, destroyed after the grace or
    // the timeouts) while the flood's peers keep their ends open: its descriptors come back to where they were.
    await eventually('the master to give the flood\'s descriptors back', () => descriptors() <= before + 5, 60_000);
    expect(flood.filter((socket) => !socket.destroyed).length).toBeGreaterThan(0);
    expect((await signedGet('/v1/version')).status).toBe(200);
    expect(readFileSync(logPath, 'utf8')).toContain('over max_connections or max_connections_per_address');
  }, 180_000);

  it('a download that is never read is destroyed after http_send_timeout_seconds', async () => {
    const master = await startTestMaster({ conf: { httpSendTimeoutMs: 1_000 } });
    await startTestWorker(master);
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(),
      config: { commands: ['head -c 25000000 /dev/urandom > "$ARTIFACT_DIR/blob"'], atomizers: [{ X: 'echo 1' }] },
    });
    expect((await waitForBuild(master, id, undefined, 120_000)).status).toBe('SUCCESS');
    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build.artifacts).not.toBeNull();
    const port = Number(new URL(master.url).port);
    const socket = connect({ host: '127.0.0.1', port });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.on('connect', resolve));
    socket.write(`GET /v1/build/${id}/artifacts.tar.gz HTTP/1.1\r\nHost: x\r\n\r\n`);
    // Read nothing: the master's writes stop making progress once the socket buffers are full, and the master
    // must give the socket up. Seen from the master's side in /proc/net/tcp (the paused client would not notice a FIN).
    socket.pause();
    await eventually('the master to drop the stalled download', () => !masterSideOpen(port, socket.localPort!), 60_000);
    socket.destroy();
  }, 180_000);
});
