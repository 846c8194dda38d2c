import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { packTarGz, walkArchiveEntries, type ArchiveEntry } from '../../shared/archive.ts';

/** A project as it stands, without its .git folder: workers have what to run, not the history. */
async function* projectEntries(projectDir: string): AsyncGenerator<ArchiveEntry> {
  for await (const entry of walkArchiveEntries(projectDir)) {
    if (entry.path === '.git' || entry.path.startsWith('.git/')) continue;
    yield entry;
  }
}

/**
 * Snapshots of build projects for workers that cannot fetch them (no access to the repository, or the
 * directory is not on their machine). Made once per build on first request, streamed to a temp file and
 * renamed into place, then served from disk to every worker that asks.
 */
export class ProjectSnapshots {
  readonly #pending = new Map<number, Promise<string>>();

  /** The snapshot file of the build, made now if it does not exist yet. */
  get(buildId: number, projectDir: string, path: string): Promise<string> {
    let made = this.#pending.get(buildId);
    if (!made) {
      made = this.#make(projectDir, path);
      this.#pending.set(buildId, made);
      made.catch(() => this.#pending.delete(buildId));
    }
    return made;
  }

  async #make(projectDir: string, path: string): Promise<string> {
    if (await stat(path).then(() => true, () => false)) return path;
    await mkdir(dirname(path), { recursive: true });
    const temp = `${path}.${process.pid}.tmp`;
    try {
      await pipeline(packTarGz(projectDir, projectEntries(projectDir)), createWriteStream(temp, { flags: 'wx' }));
      await rename(temp, path);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    return path;
  }

  /** Called when a build ends: its snapshot is no longer needed. */
  async forget(buildId: number, path: string): Promise<void> {
    this.#pending.delete(buildId);
    await rm(path, { force: true });
  }
}
