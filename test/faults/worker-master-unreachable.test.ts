/**
 * Fault suite: a worker whose master URL is wrong or unreachable says why, in words (DNS failure, connection
 * refused, TLS, HTTP status), once per change of cause rather than a bare 1006 at every retry (issue 15 item 6).
 * Real sockets: a name that cannot resolve, a port nobody listens on, an HTTP server that is not a master,
 * and TLS spoken to a plain HTTP server.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../shared/log.ts';
import { PROTOCOL_VERSION } from '../../shared/protocol.ts';
import { MasterConnection } from '../../worker/connection.ts';
import { eventually } from '../support/cluster.ts';
import { freePort } from '../support/build-results.ts';

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly cause?: string;
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** A connection to masterUrl whose log lines (debug and up) the test reads. */
function connect(masterUrl: string): { lines: LogLine[]; unreachable: string[] } {
  const lines: LogLine[] = [];
  const unreachable: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString('utf8').split('\n')) if (text.trim() !== '') lines.push(JSON.parse(text) as LogLine);
      done();
    },
  });
  const connection = new MasterConnection({
    masterUrl,
    secret: 'a'.repeat(32),
    log: createLogger({ name: 'worker', level: 'debug', destination }),
    heartbeatIntervalMs: 200,
    heartbeatFailureThreshold: 3,
    masterUnreachableMs: 600_000,
    registration: () => ({
      type: 'register', protocol_version: PROTOCOL_VERSION, name: 'w', num_executors: 1, session_id: 's',
      heartbeat_interval_ms: 200, heartbeat_failure_threshold: 3, resume: null,
    }),
    onMessage: () => undefined,
    onRegistered: () => undefined,
    onUnreachable: (reason) => unreachable.push(reason),
  });
  connection.start();
  closers.push(() => connection.close());
  return { lines, unreachable };
}

const causes = (lines: readonly LogLine[]) => lines.filter((line) => line.msg.startsWith('cannot reach the master')).map((line) => line.cause);
const attempts = (lines: readonly LogLine[]) => lines.filter((line) => line.msg === 'connection to the master failed').length;

async function listen(server: Server, port = 0): Promise<number> {
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return (server.address() as AddressInfo).port;
}

/** Answers every request and every upgrade with this HTTP status: a server that is not a master. */
function statusServer(status: number): Server {
  const server = createServer((_request, response) => response.writeHead(status).end());
  server.on('upgrade', (_request, socket) => socket.end(`HTTP/1.1 ${status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`));
  return server;
}

describe('a worker that cannot reach its master', () => {
  it('names a DNS failure, once over several retries', async () => {
    const { lines } = connect('http://no-such-master.invalid:43210');
    await eventually('three attempts', () => attempts(lines) >= 3, 30_000);
    expect(causes(lines)).toEqual([expect.stringMatching(/^DNS lookup of no-such-master\.invalid failed \(E[A-Z_]+\)$/)]);
  });

  it('names a refused connection, then the HTTP status once something else answers on that port', async () => {
    const port = await freePort();
    const { lines } = connect(`http://127.0.0.1:${port}`);
    await eventually('three attempts', () => attempts(lines) >= 3, 30_000);
    expect(causes(lines)).toEqual([`connection refused by 127.0.0.1:${port} (is the master running, on that port?)`]);

    // The cause changes: said once more, with the new cause, and then not again.
    await listen(statusServer(404), port);
    await eventually('the new cause', () => causes(lines).length === 2, 30_000);
    const seen = attempts(lines);
    await eventually('two more attempts', () => attempts(lines) >= seen + 2, 30_000);
    expect(causes(lines)).toEqual([
      `connection refused by 127.0.0.1:${port} (is the master running, on that port?)`,
      `HTTP status 404 from 127.0.0.1:${port} (is master_url the master, and not another server?)`,
    ]);
    expect(lines.filter((line) => /1006/.test(line.msg) || /1006/.test(line.cause ?? ''))).toEqual([]);
  });

  it('names a TLS failure when master_url says https and the port speaks plain HTTP', async () => {
    const port = await listen(statusServer(200));
    const { lines } = connect(`https://127.0.0.1:${port}`);
    await eventually('three attempts', () => attempts(lines) >= 3, 30_000);
    expect(causes(lines)).toEqual([expect.stringMatching(new RegExp(`^TLS with 127\\.0\\.0\\.1:${port} failed: `))]);
  });
});
