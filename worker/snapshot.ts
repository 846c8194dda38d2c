import { mkdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { signRequest } from '../shared/auth.ts';
import { createSafeExtractor } from '../shared/archive.ts';
import { ClusterRunnerError } from '../shared/errors.ts';

/**
 * Downloads the master's snapshot of a build's project (a signed GET) and unpacks it into dir with the
 * same refusals as artifacts: no paths out of dir, no links, bounded size.
 */
export async function downloadSnapshot(options: {
  masterUrl: string;
  secret: string;
  path: string;
  dir: string;
  maxBytes: number;
  signal?: AbortSignal;
}): Promise<void> {
  const response = await fetch(`${options.masterUrl}${options.path}`, {
    headers: signRequest(options.secret, 'GET', options.path),
    signal: options.signal ?? null,
  });
  if (response.status !== 200 || response.body === null) {
    const text = await response.text().catch(() => '');
    throw new ClusterRunnerError('SNAPSHOT_FAILED', `The master did not serve the project snapshot (HTTP ${response.status}): ${text.slice(0, 300)}`, { status: 502 });
  }
  await mkdir(options.dir, { recursive: true });
  const extractor = createSafeExtractor(options.dir, { maxBytes: options.maxBytes, maxEntries: 1_000_000, maxDepth: 64 });
  await Promise.all([
    pipeline(Readable.fromWeb(response.body as WebReadableStream<Uint8Array>), extractor.input),
    extractor.done,
  ]);
}
