/**
 * A TCP proxy on 127.0.0.1 for fault tests: workers connect to the master through it, and the test cuts,
 * freezes or refuses their connections at will. Real sockets both ways; nothing is mocked.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

/** One client connection and its upstream twin. */
interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  /** While frozen, bytes either way are read and dropped: both ends stay open and hear nothing. */
  isFrozen: boolean;
}

export interface TcpProxy {
  /** `http://127.0.0.1:<port>`: give this to workers as their master URL. */
  readonly url: string;
  readonly port: number;
  /** Connections accepted and forwarded since the start (refused ones not counted). */
  readonly acceptedCount: number;
  /** Connections closed on arrival because of refuse(). */
  readonly refusedCount: number;
  /** Connections open now (a frozen one counts while either of its sides is open). */
  readonly openCount: number;
  /** Destroys both sides of every open connection now (each side sees a reset); new ones are still accepted. */
  cut(): void;
  /**
   * Half-open: every open connection stays open on both sides but nothing is forwarded either way any more
   * (what arrives is dropped), so neither side sees a close. New connections are forwarded normally.
   */
  freeze(): void;
  /** Forwarding resumes on the frozen connections still open (what was dropped meanwhile is gone). */
  thaw(): void;
  /** New connections are closed as soon as they arrive, until accept(). Open ones are untouched. */
  refuse(): void;
  accept(): void;
  /** Stops listening and destroys every connection; idempotent. */
  close(): Promise<void>;
}

const proxies = new Set<TcpProxy>();

/** Closes every proxy still open; call from afterEach. */
export async function closeAllProxies(): Promise<void> {
  await Promise.allSettled([...proxies].map((proxy) => proxy.close()));
}

/** A proxy on 127.0.0.1, port 0, forwarding to target (an http URL or a port on 127.0.0.1). */
export async function startTcpProxy(target: string | number): Promise<TcpProxy> {
  const targetPort = typeof target === 'number' ? target : Number(new URL(target).port);
  const targetHost = typeof target === 'number' ? '127.0.0.1' : new URL(target).hostname;
  const pairs = new Set<Pair>();
  let isRefusing = false;
  let acceptedCount = 0;
  let refusedCount = 0;

  const forward = (pair: Pair, from: Socket, to: Socket) => {
    from.on('data', (chunk: Buffer) => {
      if (pair.isFrozen || to.destroyed) return;
      // Backpressure: a slow reader slows the writer instead of the proxy buffering without bound.
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
  };

  const server: Server = createServer((client) => {
    if (isRefusing) {
      refusedCount++;
      client.destroy();
      return;
    }
    acceptedCount++;
    const upstream = connect(targetPort, targetHost);
    const pair: Pair = { client, upstream, isFrozen: false };
    pairs.add(pair);
    forward(pair, client, upstream);
    forward(pair, upstream, client);
    for (const socket of [client, upstream]) {
      const other = socket === client ? upstream : client;
      const end = () => {
        socket.destroy();
        // Frozen, a close is news that does not get through: the other side stays open, hearing nothing.
        if (pair.isFrozen && !other.destroyed) return;
        pairs.delete(pair);
        other.destroy();
      };
      socket.on('error', end);
      socket.on('close', end);
      // A clean FIN from one side is passed on as a FIN, unless frozen (then it is dropped like data).
      socket.on('end', () => {
        if (!pair.isFrozen) other.end();
      });
    }
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  let closing: Promise<void> | null = null;
  const proxy: TcpProxy = {
    url: `http://127.0.0.1:${port}`,
    port,
    get acceptedCount() {
      return acceptedCount;
    },
    get refusedCount() {
      return refusedCount;
    },
    get openCount() {
      return pairs.size;
    },
    cut() {
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        for (const socket of [pair.client, pair.upstream]) {
          // A reset, as when a link or a host goes away (not the polite FIN of a close).
          if (socket.destroyed || socket.connecting) socket.destroy();
          else socket.resetAndDestroy();
        }
      }
    },
    freeze() {
      for (const pair of pairs) pair.isFrozen = true;
    },
    thaw() {
      for (const pair of [...pairs]) {
        pair.isFrozen = false;
        // A side that closed while frozen: the other hears of it now.
        if (pair.client.destroyed || pair.upstream.destroyed) {
          pairs.delete(pair);
          pair.client.destroy();
          pair.upstream.destroy();
        }
      }
    },
    refuse() {
      isRefusing = true;
    },
    accept() {
      isRefusing = false;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        proxies.delete(proxy);
        isRefusing = true;
        proxy.cut();
        server.close(() => resolve());
      });
      return closing;
    },
  };
  proxies.add(proxy);
  return proxy;
}
