/** Hand-made tar.gz archives, hostile ones included, for the archive and security tests. */
import { once } from 'node:events';
import { createGzip, gzipSync } from 'node:zlib';
import { Header, type HeaderData } from 'tar';

export const MiB = 1024 * 1024;

/** One raw tar entry: header block, body, padding. */
export function tarEntry(header: HeaderData, body: Buffer = Buffer.alloc(0)): Buffer {
  const encoded = new Header({ mode: 0o644, mtime: new Date(0), size: body.length, type: 'File', ...header });
  encoded.encode();
  return Buffer.concat([encoded.block ?? Buffer.alloc(0), body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

export function tarGz(...entries: Buffer[]): Buffer {
  return gzipSync(Buffer.concat([...entries, Buffer.alloc(1024)]));
}

/** gzip of a stream written piece by piece, so 200 MB of zeros never exist in memory at once. */
export async function gzipPieces(pieces: () => Iterable<Buffer>): Promise<Buffer> {
  const gzip = createGzip({ level: 9 });
  const output: Buffer[] = [];
  gzip.on('data', (chunk: Buffer) => output.push(chunk));
  const ended = once(gzip, 'end');
  for (const piece of pieces()) {
    if (!gzip.write(piece)) {
      await once(gzip, 'drain');
    }
  }
  gzip.end();
  await ended;
  return Buffer.concat(output);
}

export function* zeros(totalBytes: number): Iterable<Buffer> {
  const block = Buffer.alloc(MiB);
  for (let sent = 0; sent < totalBytes; sent += MiB) {
    yield block.subarray(0, Math.min(MiB, totalBytes - sent));
  }
}

