/**
 * A build's artifacts on this machine: `build_results/<id>/` (or `--results DIR`/<id>/) with a `latest`
 * link to the newest one. The archive is unpacked into a sibling folder first and moved into place only
 * when complete, so a failed or refused download never removes or mixes with results already there.
 */
import { mkdir, readlink, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createSafeExtractor } from '../shared/archive.ts';
import type { MasterClient } from './master-client.ts';

export const DEFAULT_RESULTS_FOLDER = 'build_results';
const ARTIFACT_WAIT_MS = 60_000;
// The archive comes from a master we trust to run our builds, but a runaway job can still fill a disk.
const ARTIFACT_LIMITS = { maxBytes: 64 * 1024 ** 3, maxEntries: 10_000_000, maxDepth: 64 };

export interface DownloadedResults {
  readonly folder: string;
  readonly files: number;
  readonly bytes: number;
}

/**
 * Downloads build buildId's archive into `<resultsRoot>/<id>/` and points `<resultsRoot>/latest` at it.
 * With exactFolder, unpacks into that folder instead and leaves `latest` alone (`artifacts -o DIR`).
 */
export async function downloadResults(client: MasterClient, buildId: number, target: { resultsRoot: string } | { exactFolder: string }): Promise<DownloadedResults> {
  const folder = 'exactFolder' in target ? path.resolve(target.exactFolder) : path.resolve(target.resultsRoot, String(buildId));
  await mkdir(path.dirname(folder), { recursive: true });
  const partial = `${folder}.partial-${process.pid}`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });
  let summary: { files: number; bytes: number };
  try {
    const response = await client.fetchArtifacts(buildId, { waitMs: ARTIFACT_WAIT_MS, retryMs: 500 });
    if (response.body === null) throw new Error('the master sent an empty answer');
    const source = Readable.fromWeb(response.body as unknown as WebReadableStream<Uint8Array>);
    const extractor = createSafeExtractor(partial, ARTIFACT_LIMITS);
    // The extractor swallows the rest of a refused archive; there is no point downloading it.
    extractor.done.catch(() => source.destroy());
    const [copied, unpacked] = await Promise.allSettled([pipeline(source, extractor.input), extractor.done]);
    if (unpacked.status === 'rejected') throw unpacked.reason;
    if (copied.status === 'rejected') throw copied.reason;
    summary = unpacked.value;
    // Only now, with the whole archive unpacked, does an older copy of this build's results go.
    await rm(folder, { recursive: true, force: true });
    await rename(partial, folder);
  } finally {
    await rm(partial, { recursive: true, force: true });
  }
  if ('resultsRoot' in target) await pointLatestAt(path.resolve(target.resultsRoot), String(buildId));
  return { folder, ...summary };
}

/** Replaces `<root>/latest` by a relative link to name, atomically (a new link renamed over the old one). */
async function pointLatestAt(root: string, name: string): Promise<void> {
  const latest = path.join(root, 'latest');
  if ((await readlink(latest).catch(() => null)) === name) return;
  const temporary = path.join(root, `.latest-${process.pid}`);
  await rm(temporary, { force: true });
  await symlink(name, temporary);
  await rename(temporary, latest);
}
