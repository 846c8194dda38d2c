/**
 * The build's downloadable archives (SPEC §7): `artifacts.tar.gz` and `artifacts.zip`, with the same content.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, lstatSync, type WriteStream } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
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
  const { artifactsDir, tarGzPath, zipPath } = options;
  const tarGzTemp = tempPathBeside(tarGzPath);
  const zipTemp = tempPathBeside(zipPath);
  const abort = new AbortController();
  // The one that failed first has the cause (a full disk, say); the other only reports being stopped.
  let firstFailure: { error: unknown } | null = null;
  const stopTheOther = (error: unknown): never => {
    firstFailure ??= { error };
    abort.abort(error);
    throw error;
  };
  try {
    // One reading of the folders feeds both writers, the one ahead waiting for the other now and then.
    const [forTarGz, forZip] = shareListing(listBuildEntries(artifactsDir, options.results, options.failures), 2, LISTING_AHEAD_ENTRIES);
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
    // Renamed only once both are complete, so the two downloads always come from the same listing.
    await rename(tarGzTemp, tarGzPath);
    await rename(zipTemp, zipPath);
  } catch (error) {
    await Promise.all([rm(tarGzTemp, { force: true }), rm(zipTemp, { force: true })]);
    if (error instanceof ClusterRunnerError) {
      throw error;
    }
    throw new ClusterRunnerError('ARCHIVE_WRITE_FAILED', `could not write the build archives: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}

/** Everything both archives hold, in archive order: folders in numeric order (artifact_2_0 before artifact_10_0). */
async function* listBuildEntries(artifactsDir: string, results: readonly AtomResultFiles[], failures: readonly string[]): AsyncGenerator<ArchiveEntry> {
  const onDisk = new Set((await readdir(artifactsDir)).filter((name) => ATOM_FOLDER.test(name)));
  const byFolder = new Map(results.map((result) => [atomFolderName(result.subjobId, result.atomId), result]));
  const folders = [...new Set([...byFolder.keys(), ...onDisk])]
    .map((name) => ({ name, match: ATOM_FOLDER.exec(name)! }))
    .sort((a, b) => Number(a.match[1]) - Number(b.match[1]) || Number(a.match[2]) - Number(b.match[2]))
    .map((folder) => folder.name);
  const now = new Date();
  const budget = new LoopBudget();
  for (const name of folders) {
    const result = byFolder.get(name);
    let mtime = now;
    if (onDisk.has(name)) {
      await budget.spend();
      const stat = lstatSync(path.join(artifactsDir, name));
      if (!stat.isDirectory()) continue;
      mtime = stat.mtime;
    }
    yield { type: 'directory', path: name, mtime };
    let hasConsole = false;
    if (onDisk.has(name)) {
      for await (const entry of walkArchiveEntries(artifactsDir, name, budget)) {
        const file = entry.path.slice(name.length + 1);
        if (result !== undefined && RESULT_FILES.has(file)) continue;
        if (file === CONSOLE_FILE) hasConsole = true;
        if (entry.type === 'file' && !entry.isExecutable && entry.size !== undefined && entry.size <= INLINE_FILE_BYTES) {
          // An empty file (the console of a silent atom) needs no reading at all: four system calls fewer. The
          // folders no longer change (the build's leases are revoked), so its size at the listing stands.
          if (entry.size > 0) await budget.spend();
          const content = entry.size === 0 ? EMPTY : readSmallArchiveFile(path.join(artifactsDir, entry.path), INLINE_FILE_BYTES);
          yield content === null ? entry : { type: 'content', path: entry.path, mtime: entry.mtime, content };
        } else {
          yield entry;
        }
      }
    }
    if (result === undefined) continue;
    const content = (file: string, text: string): ArchiveEntry => ({ type: 'content', path: `${name}/${file}`, mtime, content: Buffer.from(text) });
    if (!hasConsole) yield content(CONSOLE_FILE, '');
    yield content(COMMAND_FILE, `${result.command}\n`);
    yield content(EXIT_CODE_FILE, `${result.exitCode}\n`);
    yield content(TIME_FILE, `${result.timeS.toFixed(2)}\n`);
  }
  if (failures.length > 0) {
    const content = Buffer.from([...failures].sort().join('\n'));
    yield { type: 'content', path: FAILURES_FILE, mtime: now, content };
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
