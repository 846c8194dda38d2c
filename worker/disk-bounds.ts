import { readdir, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../shared/log.ts';
import { errorMessage } from '../shared/errors.ts';
import { folderBytes } from '../shared/folder-size.ts';

/** A build set up (or being set up) on this worker: its workspace and its repository cache are in use. */
export interface BuildInUse {
  readonly build_id: number;
  readonly project: { readonly type: string; readonly url?: string };
}

export interface WorkerDiskBoundOptions {
  /** This worker process's own folder; its build workspaces are `<workDir>/projects/<build id>`. */
  readonly workDir: string;
  /** The repository caches, one bare mirror per folder (shared by the processes of one base directory). */
  readonly gitCacheRoot: string;
  /** The folder whose file system's free space is watched (the base directory). */
  readonly diskPath: string;
  /** Old workspaces and caches kept in all (conf max_workspace_bytes). */
  readonly maxBytes: number;
  /** Free bytes below which the worker is under disk pressure (conf min_disk_free_bytes; 0 = never). */
  readonly minFreeBytes: number;
  readonly buildsInUse: () => Iterable<BuildInUse>;
  /** The cache folder of a repository (GitCache.mirrorPath). */
  readonly mirrorPath: (url: string) => string;
  readonly log: Logger;
  /** Milliseconds since the epoch; default Date.now. */
  readonly now?: () => number;
  /**
   * Anything used more recently than this is kept whatever the bound: the git cache is shared with other
   * processes of the same base directory (a local master, a second worker), whose use this one cannot see.
   * Default 10 minutes.
   */
  readonly recentUseMs?: number;
  /** Between passes; default 5 minutes, at least 1 s. */
  readonly intervalMs?: number;
}

export type DiskState = 'ok' | 'disk_pressure';

export interface DiskPassReport {
  readonly removed: readonly string[];
  /** Workspaces and caches left, in bytes. */
  readonly keptBytes: number;
  /** Free bytes on the disk after the pass, null where the platform cannot tell. */
  readonly freeBytes: number | null;
  readonly state: DiskState;
}

interface Entry {
  readonly path: string;
  readonly bytes: number;
  readonly lastUsedMs: number;
}

/**
 * Keeps a worker's disk within bounds over months: build workspaces a master never asked to tear down (it
 * died, or forgot the build) and repository caches of projects no longer built go, least recently used first,
 * once they pass max_workspace_bytes in all or free space falls below min_disk_free_bytes. Nothing a build
 * here uses, and nothing used in the last minutes, is ever removed. A disk still short of space after that
 * is reported as the state `disk_pressure` (logged once per change), never a crash: builds go on failing or
 * succeeding on their own merits.
 */
export class WorkerDiskBound {
  readonly #options: WorkerDiskBoundOptions;
  readonly #now: () => number;
  #state: DiskState = 'ok';
  #freeBytes: number | null = null;
  #timer: NodeJS.Timeout | null = null;
  #pass: Promise<DiskPassReport> | null = null;
  #isClosed = false;

  constructor(options: WorkerDiskBoundOptions) {
    if (!(options.maxBytes > 0)) throw new Error(`maxBytes must be > 0, not ${options.maxBytes}`);
    if (!(options.minFreeBytes >= 0)) throw new Error(`minFreeBytes must be >= 0, not ${options.minFreeBytes}`);
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get state(): DiskState {
    return this.#state;
  }

  get freeBytes(): number | null {
    return this.#freeBytes;
  }

  start(): void {
    if (this.#timer !== null || this.#isClosed) return;
    const intervalMs = Math.max(1_000, this.#options.intervalMs ?? 5 * 60_000);
    const tick = () => {
      void this.runPass().catch((error: unknown) => {
        this.#options.log.warn({ err: errorMessage(error) }, 'cleaning old workspaces failed; trying again later');
      }).finally(() => {
        if (!this.#isClosed) this.#timer = setTimeout(tick, intervalMs).unref();
      });
    };
    this.#timer = setTimeout(tick, 0).unref();
  }

  async close(): Promise<void> {
    this.#isClosed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#pass?.catch(() => undefined);
  }

  /** One pass; a call while one runs gets that pass. */
  runPass(): Promise<DiskPassReport> {
    this.#pass ??= this.#runPass().finally(() => {
      this.#pass = null;
    });
    return this.#pass;
  }

  async #runPass(): Promise<DiskPassReport> {
    const inUse = this.#pathsInUse();
    const entries = [
      ...(await this.#entries(join(this.#options.workDir, 'projects'), () => [])),
      ...(await this.#entries(this.#options.gitCacheRoot, (path) => [join(path, 'FETCH_HEAD'), join(path, 'HEAD')])),
    ];
    let keptBytes = entries.reduce((sum, entry) => sum + entry.bytes, 0);
    let freeBytes = await this.#readFreeBytes();
    const isShort = () => keptBytes > this.#options.maxBytes || (freeBytes !== null && freeBytes < this.#options.minFreeBytes);

    const removed: string[] = [];
    const recentSince = this.#now() - (this.#options.recentUseMs ?? 10 * 60_000);
    const removable = entries
      .filter((entry) => !inUse.has(entry.path) && entry.lastUsedMs < recentSince)
      .sort((a, b) => a.lastUsedMs - b.lastUsedMs);
    for (const entry of removable) {
      if (!isShort() || this.#isClosed) break;
      // Looked at again just before: a build may have started using it while the others were measured.
      if (this.#pathsInUse().has(entry.path)) continue;
      try {
        await rm(entry.path, { recursive: true, force: true, maxRetries: 2 });
      } catch (error) {
        this.#options.log.warn({ path: entry.path, err: errorMessage(error) }, 'cannot remove an old workspace or cache');
        continue;
      }
      removed.push(entry.path);
      keptBytes -= entry.bytes;
      if (freeBytes !== null) freeBytes += entry.bytes;
    }
    if (removed.length > 0) freeBytes = await this.#readFreeBytes();

    const state: DiskState = freeBytes !== null && freeBytes < this.#options.minFreeBytes ? 'disk_pressure' : 'ok';
    if (state !== this.#state) {
      if (state === 'disk_pressure') this.#options.log.warn({ freeBytes, minFreeBytes: this.#options.minFreeBytes }, 'disk pressure: free space is below min_disk_free_bytes');
      else this.#options.log.info({ freeBytes }, 'disk pressure is over');
    }
    this.#state = state;
    this.#freeBytes = freeBytes;
    if (removed.length > 0) this.#options.log.info({ removed: removed.length, keptBytes, freeBytes }, 'removed old workspaces and repository caches');
    return { removed, keptBytes, freeBytes, state };
  }

  #pathsInUse(): Set<string> {
    const paths = new Set<string>();
    for (const build of this.#options.buildsInUse()) {
      paths.add(join(this.#options.workDir, 'projects', String(build.build_id)));
      if (build.project.type === 'git' && build.project.url !== undefined) paths.add(this.#options.mirrorPath(build.project.url));
    }
    return paths;
  }

  /** The folders under root with their size and last use (the newest mtime of the folder and `markers`). */
  async #entries(root: string, markers: (path: string) => string[]): Promise<Entry[]> {
    const entries: Entry[] = [];
    for (const name of await readdir(root).catch(() => [] as string[])) {
      const path = join(root, name);
      const stats = await stat(path).catch(() => null);
      if (stats === null || !stats.isDirectory()) continue;
      let lastUsedMs = stats.mtimeMs;
      for (const marker of markers(path)) lastUsedMs = Math.max(lastUsedMs, (await stat(marker).catch(() => null))?.mtimeMs ?? 0);
      entries.push({ path, bytes: await folderBytes(path), lastUsedMs });
    }
    return entries;
  }

  async #readFreeBytes(): Promise<number | null> {
    try {
      const stats = await statfs(this.#options.diskPath);
      return stats.bavail * stats.bsize;
    } catch {
      return null;
    }
  }
}
