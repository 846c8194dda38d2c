/**
 * The build's downloadable archives (SPEC §7): `artifacts.tar.gz` and `artifacts.zip`, with the same content.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, lstatSync, type WriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { generateZip, type ZipSource } from './zip-writer.ts';
import { shareListing } from './shared-listing.ts';
import { ClusterRunnerError, errorMessage } from '../../shared/errors.ts';
import { coalesceChunks, LoopBudget, openArchiveFile, packTarGz, readSmallArchiveFile, walkArchiveEntries, type ArchiveEntry } from '../../shared/archive.ts';
import { atomFolderName, COMMAND_FILE, CONSOLE_FILE, EXIT_CODE_FILE, TIME_FILE } from './results-layout.ts';

const ATOM_FOLDER = /^artifact_(\d+)_(\d+)$/;
const FAILURES_FILE = 'failures.txt';
/**
 * Files up to this size (the console output, most artifacts) are read in the listing, in one synchronous call,
 * instead of opened by each archive writer: four promise-based calls each, which were most of the time a build
 * took to finish (issue 18). Bounds what the listing holds at once.
 */
const INLINE_FILE_BYTES = 64 * 1024;
const EMPTY = Buffer.alloc(0);
/** How far one archive writer may read ahead of the other: about this many entries are held at most. */
const LISTING_AHEAD_ENTRIES = 256;
/** How often a running build's archive looks again whether the master has spare time. */
const BUSY_RETRY_MS = 10;

/** One finished atom's recorded result: the archive writes its clusterrunner_* files from these values. */
export interface AtomResultFiles {
  readonly subjobId: number;
  readonly atomId: number;
  /** The atom command as it ran: `export VAR="value"; <job command>`. */
  readonly command: string;
  readonly exitCode: number;
  readonly timeS: number;
}

export interface BuildArchiveOptions {
  /** Holds the build's `artifact_<subjob>_<atom>` folders (console output, artifacts); anything else in it is left out. */
  readonly artifactsDir: string;
  readonly tarGzPath: string;
  readonly zipPath: string;
  /** Every atom with a result; its folder gets the result files even if nothing of it is on disk. */
  readonly results: readonly AtomResultFiles[];
  /** Folder names of the atoms that failed; `failures.txt` is written only when there is one. */
  readonly failures: readonly string[];
}

/** Written from the recorded result; a file of the same name in the folder (an artifact, say) never wins. */
const RESULT_FILES = new Set([COMMAND_FILE, EXIT_CODE_FILE, TIME_FILE]);

/**
 * Writes both archives with the same content: one `artifact_<subjob>_<atom>` folder per atom that has a
 * result or left files (SPEC §7), plus `failures.txt` (the given names sorted with the default string sort,
 * one a line, no trailing newline) when failures is non-empty. One walk of the folders feeds both archives.
 * Streams (never holds a whole archive in memory), writes each to a temp file beside the target and renames
 * it into place, so a reader never sees a half-written archive.
 */
export async function writeBuildArchives(options: BuildArchiveOptions): Promise<void> {
  await writeArchives(options, listBuildEntries(options.artifactsDir, options.results, options.failures, null), new AbortController().signal);
}

/** The targets of writeBuildArchives, filled from `entries`; aborting the signal stops both and removes their temp files. */
async function writeArchives(targets: { readonly artifactsDir: string; readonly tarGzPath: string; readonly zipPath: string },
  entries: AsyncIterable<ArchiveEntry>, signal: AbortSignal): Promise<void> {
  const { artifactsDir, tarGzPath, zipPath } = targets;
  const tarGzTemp = tempPathBeside(tarGzPath);
  const zipTemp = tempPathBeside(zipPath);
  const abort = new AbortController();
  const stopBoth = () => abort.abort(signal.reason);
  signal.addEventListener('abort', stopBoth, { once: true });
  // The one that failed first has the cause (a full disk, say); the other only reports being stopped.
  let firstFailure: { error: unknown } | null = null;
  const stopTheOther = (error: unknown): never => {
    firstFailure ??= { error };
    abort.abort(error);
    throw error;
  };
  try {
    // One reading of the folders feeds both writers, the one ahead waiting for the other now and then.
    const [forTarGz, forZip] = shareListing(entries, 2, LISTING_AHEAD_ENTRIES);
    const results = await Promise.allSettled([
      writeTarGz(artifactsDir, forTarGz!, tarGzTemp, abort.signal).catch(stopTheOther),
      writeZip(artifactsDir, forZip!, zipTemp, abort.signal).catch(stopTheOther),
    ]);
    if (firstFailure !== null) throw (firstFailure as { error: unknown }).error;
    for (const result of results) {
      if (result.status === 'rejected') {
        throw result.reason;
      }
    }
    // Stopped, the listing may have ended early: such archives are never put in place.
    if (signal.aborted) throw signal.reason;
    // Renamed only once both are complete, so the two downloads always come from the same listing.
    await rename(tarGzTemp, tarGzPath);
    await rename(zipTemp, zipPath);
    // Best effort: the archives are in place; a leftover only takes room until the build is pruned.
    await removeStaleTemps(tarGzPath, zipPath).catch(() => undefined);
  } catch (error) {
    await Promise.all([rm(tarGzTemp, { force: true }), rm(zipTemp, { force: true })]);
    if (error instanceof ClusterRunnerError) {
      throw error;
    }
    throw new ClusterRunnerError('ARCHIVE_WRITE_FAILED', `could not write the build archives: ${errorMessage(error)}`, {
      cause: error,
    });
  } finally {
    signal.removeEventListener('abort', stopBoth);
  }
}

/** An atom folder's place in archive order: numeric, so artifact_2_0 comes before artifact_10_0. */
interface FolderKey {
  readonly subjobId: number;
  readonly atomId: number;
}

const compareKeys = (a: FolderKey, b: FolderKey) => a.subjobId - b.subjobId || a.atomId - b.atomId;

/**
 * Everything both archives hold, in archive order; with `from`, only the folders from that one on (those
 * before it are already written: RunningArchive), then failures.txt.
 */
async function* listBuildEntries(artifactsDir: string, results: readonly AtomResultFiles[], failures: readonly string[], from: FolderKey | null): AsyncGenerator<ArchiveEntry> {
  const onDisk = new Set((await readdir(artifactsDir)).filter((name) => ATOM_FOLDER.test(name)));
  const byFolder = new Map(results.map((result) => [atomFolderName(result.subjobId, result.atomId), result]));
  const folders = [...new Set([...byFolder.keys(), ...onDisk])]
    .map((name) => { const match = ATOM_FOLDER.exec(name)!; return { name, key: { subjobId: Number(match[1]), atomId: Number(match[2]) } }; })
    .filter((folder) => from === null || compareKeys(folder.key, from) >= 0)
    .sort((a, b) => compareKeys(a.key, b.key))
    .map((folder) => folder.name);
  const now = new Date();
  const budget = new LoopBudget();
  for (const name of folders) yield* folderEntries(artifactsDir, name, byFolder.get(name), onDisk.has(name), now, budget);
  if (failures.length > 0) {
    const content = Buffer.from([...failures].sort().join('\n'));
    yield { type: 'content', path: FAILURES_FILE, mtime: now, content };
  }
}

/**
 * One atom's folder: the folder, what is in it (small files read here), and the result files written from
 * `result`. onDisk 'unknown': looked for (an atom that printed nothing and left no files has no folder).
 */
async function* folderEntries(artifactsDir: string, name: string, result: AtomResultFiles | undefined, onDisk: boolean | 'unknown',
  now: Date, budget: LoopBudget): AsyncGenerator<ArchiveEntry> {
  let mtime = now;
  let isOnDisk = false;
  if (onDisk !== false) {
    await budget.spend();
    const stat = lstatSync(path.join(artifactsDir, name), { throwIfNoEntry: onDisk === true });
    if (stat !== undefined) {
      if (!stat.isDirectory()) return;
      mtime = stat.mtime;
      isOnDisk = true;
    } else if (result === undefined) {
      return;
    }
  }
  yield { type: 'directory', path: name, mtime };
  let hasConsole = false;
  if (isOnDisk) {
    for await (const entry of walkArchiveEntries(artifactsDir, name, budget)) {
      const file = entry.path.slice(name.length + 1);
      if (result !== undefined && RESULT_FILES.has(file)) continue;
      if (file === CONSOLE_FILE) hasConsole = true;
      if (entry.type === 'file' && !entry.isExecutable && entry.size !== undefined && entry.size <= INLINE_FILE_BYTES) {
        // An empty file (the console of a silent atom) needs no reading at all: four system calls fewer. The
        // folder no longer changes (its atom has its result, or the build's leases are revoked), so its size
        // at the listing stands.
        if (entry.size > 0) await budget.spend();
        const content = entry.size === 0 ? EMPTY : readSmallArchiveFile(path.join(artifactsDir, entry.path), INLINE_FILE_BYTES);
        yield content === null ? entry : { type: 'content', path: entry.path, mtime: entry.mtime, content };
      } else {
        yield entry;
      }
    }
  }
  if (result === undefined) return;
  const content = (file: string, text: string): ArchiveEntry => ({ type: 'content', path: `${name}/${file}`, mtime, content: Buffer.from(text) });
  if (!hasConsole) yield content(CONSOLE_FILE, '');
  yield content(COMMAND_FILE, `${result.command}\n`);
  yield content(EXIT_CODE_FILE, `${result.exitCode}\n`);
  yield content(TIME_FILE, `${result.timeS.toFixed(2)}\n`);
}

/**
 * A build's archives written while it runs, so that it ends soon after its last atom rather than after
 * archiving all of them (a 1000-atom build spent 0.15 s there, a 100,000-atom one 9 s: issue 18). An atom's
 * folder is final once its result is (its files are closed, and only a new round, which writes the archives
 * anew, runs it again). Folders go in in archive order: whenever the atoms from the first one not yet written
 * have their results, those are written, so the archives hold the same entries in the same order as
 * writeBuildArchives' would. finish() adds the rest (atoms that ran last, or never ran) and failures.txt.
 *
 * Nothing is held but the results waiting for an earlier atom, and the listing's usual read-ahead. Should
 * writing fail, finish() says so and the caller writes the archives the usual way.
 */
export class RunningArchive {
  readonly #targets: { readonly artifactsDir: string; readonly tarGzPath: string; readonly zipPath: string };
  /** Per subjob id, its atom count; an atom's slot is #offsets[subjobId] + atomId. */
  readonly #sizes: readonly number[];
  readonly #offsets: Int32Array;
  /** Results of atoms that came before an earlier atom's, by slot, until that one's comes. */
  readonly #waiting: (AtomResultFiles | undefined)[];
  /** The first atom not yet handed to the writers. */
  #next: FolderKey = { subjobId: 0, atomId: 0 };
  #ready: AtomResultFiles[] = [];
  #readyHead = 0;
  #rest: { readonly results: readonly AtomResultFiles[]; readonly failures: readonly string[] } | null = null;
  #wake: (() => void) | null = null;
  readonly #abort = new AbortController();
  #writing: Promise<void> | null = null;
  #hasFailed = false;

  readonly #isBusy: () => boolean;

  /**
   * subjobSizes: the build's atoms per subjob, by subjob id. isBusy: while it says so (results wait to be
   * handled), no folder is started: the archives are written in the master's spare time, never at the cost
   * of results or status reads, and what is left when the build ends is written then.
   */
  constructor(targets: { readonly artifactsDir: string; readonly tarGzPath: string; readonly zipPath: string }, subjobSizes: readonly number[],
    isBusy: () => boolean = () => false) {
    this.#targets = targets;
    this.#isBusy = isBusy;
    this.#sizes = subjobSizes;
    this.#offsets = new Int32Array(subjobSizes.length + 1);
    for (let id = 0; id < subjobSizes.length; id++) this.#offsets[id + 1] = this.#offsets[id]! + subjobSizes[id]!;
    this.#waiting = new Array<AtomResultFiles | undefined>(this.#offsets[subjobSizes.length]!);
    this.#skipEmptySubjobs();
  }

  /** An atom's final result (no retry follows in this round). */
  atomDone(result: AtomResultFiles): void {
    if (this.#rest !== null || this.#hasFailed || this.#abort.signal.aborted) return;
    const { subjobId, atomId } = result;
    if (!(subjobId >= 0 && subjobId < this.#sizes.length && atomId >= 0 && atomId < this.#sizes[subjobId]!)) return;
    if (compareKeys(result, this.#next) < 0) return;
    this.#waiting[this.#offsets[subjobId]! + atomId] = result;
    let moved = false;
    for (;;) {
      const { subjobId: nextSubjob, atomId: nextAtom } = this.#next;
      if (nextSubjob >= this.#sizes.length) break;
      const slot = this.#offsets[nextSubjob]! + nextAtom;
      const waiting = this.#waiting[slot];
      if (waiting === undefined) break;
      this.#waiting[slot] = undefined;
      this.#ready.push(waiting);
      moved = true;
      this.#next = nextAtom + 1 < this.#sizes[nextSubjob]! ? { subjobId: nextSubjob, atomId: nextAtom + 1 } : { subjobId: nextSubjob + 1, atomId: 0 };
      this.#skipEmptySubjobs();
    }
    if (!moved) return;
    this.#start();
    this.#wakeListing();
  }

  /**
   * Completes both archives with the atoms not yet written (results: every accepted result of the build, as
   * writeBuildArchives takes them) and failures.txt, and renames them into place. Throws as
   * writeBuildArchives does; then nothing of this archive is left behind.
   */
  async finish(results: readonly AtomResultFiles[], failures: readonly string[]): Promise<void> {
    if (this.#abort.signal.aborted) throw new ClusterRunnerError('ARCHIVE_WRITE_FAILED', 'the archive being written was abandoned');
    this.#rest ??= { results, failures };
    this.#start();
    this.#wakeListing();
    await this.#writing;
  }

  /** Stops writing and removes the temp files (the master is closing; the build resumes after its restart). */
  async abandon(): Promise<void> {
    this.#abort.abort(new Error('the master is closing'));
    this.#wakeListing();
    await this.#writing?.catch(() => undefined);
  }

  #skipEmptySubjobs(): void {
    while (this.#next.subjobId < this.#sizes.length && this.#sizes[this.#next.subjobId] === 0) this.#next = { subjobId: this.#next.subjobId + 1, atomId: 0 };
  }

  #wakeListing(): void {
    this.#wake?.();
    this.#wake = null;
  }

  #start(): void {
    if (this.#writing !== null) return;
    this.#writing = (async () => {
      // Atoms that print nothing and leave no files make no folder: the writers' temp files need one.
      await mkdir(this.#targets.artifactsDir, { recursive: true });
      await writeArchives(this.#targets, this.#list(), this.#abort.signal);
    })();
    // Failed: what comes next is not kept for it; finish() reports the failure.
    this.#writing.catch(() => {
      this.#hasFailed = true;
      this.#ready = [];
      this.#readyHead = 0;
    });
  }

  async *#list(): AsyncGenerator<ArchiveEntry> {
    const budget = new LoopBudget();
    for (;;) {
      while (this.#readyHead < this.#ready.length) {
        while (this.#isBusy() && this.#rest === null && !this.#abort.signal.aborted) await sleep(BUSY_RETRY_MS);
        const result = this.#ready[this.#readyHead]!;
        this.#ready[this.#readyHead++] = undefined as never;
        if (this.#readyHead === this.#ready.length) {
          this.#ready = [];
          this.#readyHead = 0;
        }
        yield* folderEntries(this.#targets.artifactsDir, atomFolderName(result.subjobId, result.atomId), result, 'unknown', new Date(), budget);
      }
      if (this.#abort.signal.aborted) return;
      if (this.#rest !== null) break;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
    yield* listBuildEntries(this.#targets.artifactsDir, this.#rest.results, this.#rest.failures, this.#next);
  }
}

async function writeTarGz(rootDir: string, entries: AsyncIterable<ArchiveEntry>, target: string, signal: AbortSignal): Promise<void> {
  await pipeline(packTarGz(rootDir, entries), createTarget(target), { signal });
}

async function writeZip(rootDir: string, entries: AsyncIterable<ArchiveEntry>, target: string, signal: AbortSignal): Promise<void> {
  await pipeline(Readable.from(coalesceChunks(generateZip(zipSources(rootDir, entries)))), createTarget(target), { signal });
}

async function* zipSources(rootDir: string, entries: AsyncIterable<ArchiveEntry>): AsyncGenerator<ZipSource> {
  for await (const entry of entries) {
    if (entry.type === 'file') yield { ...entry, open: () => openArchiveFile(path.join(rootDir, entry.path)) };
    else yield entry;
  }
}

/** `flush`: the data reaches the disk before the rename, so a crash cannot leave an empty archive in place. */
function createTarget(target: string): WriteStream {
  return createWriteStream(target, { flags: 'wx', flush: true });
}

function tempPathBeside(target: string): string {
  return `${target}.${randomBytes(6).toString('hex')}.tmp`;
}

/**
 * A build has one writer of its archives at a time, so once they are in place any other temp file beside them
 * is a dead master's: killed while it wrote them (a running build's archives are written all along).
 */
async function removeStaleTemps(...targets: string[]): Promise<void> {
  for (const target of targets) {
    const folder = path.dirname(target);
    const prefix = `${path.basename(target)}.`;
    const stale = (await readdir(folder)).filter((name) => name.startsWith(prefix) && /^[0-9a-f]{12}\.tmp$/.test(name.slice(prefix.length)));
    await Promise.all(stale.map((name) => rm(path.join(folder, name), { force: true })));
  }
}
