import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../../shared/log.ts';

export interface ConnectionLimits {
  /** max_connections: open connections in all; past it a new one is closed at once. */
  readonly maxConnections: number;
  /** max_connections_per_address: open connections from one remote address. */
  readonly maxPerAddress: number;
  /** http_send_timeout_seconds: a connection that neither sends nor takes a byte for this long is destroyed. */
  readonly idleMs: number;
  /** After the master has ended its side (a refused upgrade, a finished answer with Connection: close), this long for the peer to close. */
  readonly closeGraceMs: number;
}

/**
 * Bounds what the master's sockets can hold (issue 10 item 4): a download never read stops making progress
 * and is destroyed after idleMs (Node's server timeout: no byte out or in); a socket whose answer the master
 * has ended is destroyed closeGraceMs later, so a peer that never closes (FIN-WAIT-2 on its side) frees the
 * descriptor anyway; and connections are counted per address and in all, so one address cannot take every
 * descriptor, and nobody can take them all. WebSocket connections of workers are exempt from idleMs (ws clears
 * the socket timeout; heartbeats watch them) but count in the limits like any other.
 */
export function guardConnections(server: Server, limits: ConnectionLimits, log: Logger): void {
  const perAddress = new Map<string, number>();
  let open = 0;
  let refusedSinceLog = 0;
  let logTimer: NodeJS.Timeout | null = null;

  // Node destroys a socket that times out when nobody else listens for 'timeout' (http.Server.setTimeout).
  server.setTimeout(limits.idleMs);

  const onSocket = (socket: Socket): void => {
    const address = socket.remoteAddress ?? 'unknown';
    const fromAddress = perAddress.get(address) ?? 0;
    if (open >= limits.maxConnections || fromAddress >= limits.maxPerAddress) {
      socket.destroy();
      // One line per second at most: the log must not become the flood.
      if (refusedSinceLog++ === 0) {
        logTimer = setTimeout(() => {
          log.warn({ refused: refusedSinceLog, open, maxConnections: limits.maxConnections, maxConnectionsPerAddress: limits.maxPerAddress },
            'connections refused: over max_connections or max_connections_per_address');
          refusedSinceLog = 0;
          logTimer = null;
        }, 1000);
        logTimer.unref();
      }
      return;
    }
    open++;
    perAddress.set(address, fromAddress + 1);
    let closeTimer: NodeJS.Timeout | null = null;
    socket.once('finish', () => {
      closeTimer = setTimeout(() => socket.destroy(), limits.closeGraceMs);
      closeTimer.unref();
    });
    socket.once('close', () => {
      if (closeTimer) clearTimeout(closeTimer);
      open--;
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left === 0) perAddress.delete(address);
      else perAddress.set(address, left);
    });
  };
  // 'connection' fires for every TCP socket, TLS or not, before any byte is read.
  server.prependListener('connection', onSocket);
  server.once('close', () => {
    if (logTimer) clearTimeout(logTimer);
  });
}
