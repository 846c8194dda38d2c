import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Bytes a file or folder takes on disk (allocated blocks, not apparent sizes: sparse files and small files
 * count as what they really cost), without following symbolic links. Missing paths count 0, and so do
 * entries that vanish during the walk: results and workspaces are removed while others measure them.
 * Every step is asynchronous, so a large tree never blocks the event loop.
 */
export async function folderBytes(path: string, signal?: AbortSignal): Promise<number> {
  let total = 0;
  const pending = [path];
  while (pending.length > 0) {
    signal?.throwIfAborted();
    const current = pending.pop()!;
    const stats = await lstat(current).catch(() => null);
    if (stats === null) continue;
    total += stats.blocks * 512;
    if (!stats.isDirectory()) continue;
    const names = await readdir(current).catch(() => [] as string[]);
    for (const name of names) pending.push(join(current, name));
  }
  return total;
}
