import { readdirSync } from 'node:fs';
import { packDirectory } from '../shared/archive.ts';
import { ARTIFACT_CHUNK_BYTES, encodeArtifactChunk, type ArtifactChunkHeader } from '../shared/protocol.ts';
import type { MasterConnection } from './connection.ts';

/**
 * Synchronous on purpose: one small directory read, and the atom's result then leaves in the turn its command
 * ended instead of after a round through the thread pool (which a loaded machine makes long; issue 18).
 */
export function hasArtifacts(dir: string): boolean {
  try {
    return readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}

/**
 * Streams an atom's artifact folder to the master as tar.gz in binary frames, never holding more than a
 * chunk in memory and waiting when the socket is full. Returns false when it stopped because the lease
 * ended or the connection closed for good.
 */
export async function sendArtifacts(
  connection: MasterConnection,
  dir: string,
  header: Omit<ArtifactChunkHeader, 'type' | 'final'>,
  isStillWanted: () => boolean,
): Promise<boolean> {
  const stream = packDirectory(dir);
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async (final: boolean) => {
    const bytes = Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    return connection.sendBinary(encodeArtifactChunk({ type: 'artifact_chunk', ...header, final }, bytes), isStillWanted);
  };
  try {
    for await (const chunk of stream) {
      pending.push(chunk as Buffer);
      pendingBytes += (chunk as Buffer).length;
      if (pendingBytes >= ARTIFACT_CHUNK_BYTES && !(await flush(false))) return false;
    }
    return await flush(true);
  } finally {
    stream.destroy();
  }
}
