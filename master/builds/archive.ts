/**
 * The build's downloadable archives (SPEC §7): `artifacts.tar.gz` and `artifacts.zip`, with the same content.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { lstat, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ZipFile } from 'yazl';
import { ClusterRunnerError, errorMessage } from '../../shared/errors.ts';
import { openArchiveFile, packTarGz, walkArchiveEntries, type ArchiveEntry } from '../../shared/archive.ts';

const ATOM_FOLDER = /^artifact_(\d+)_(\d+)$/;
const FAILURES_FILE = 'failures.txt';

export interface BuildArchiveOptions {
  /** Holds the build's `artifact_<subjob>_<atom>` folders; anything else in it is left out. */
  readonly artifactsDir: string;
  readonly tarGzPath: string;
  readonly zipPath: string;
  /** Folder names of the atoms that failed; `failures.txt` is written only when there is one. */
  readonly failures: readonly string[];
}

/**
 * artifactsDir holds exactly the build's `artifact_<subjob>_<atom>` folders. Writes both archives with the
 * same content: those folders at the archive root, plus `failures.txt` (the given names sorted with the
 * default string sort, one a line, no trailing newline) when failures is non-empty. Streams (never holds a
 * whole archive in memory), writes each to a temp file beside the target and renames it into place, so a
 * reader never sees a half-written archive.
 */
export async function writeBuildArchives(options: BuildArchiveOptions): Promise<void> {
  const { artifactsDir, tarGzPath, zipPath } = options;
  const tarGzTemp = tempPathBeside(tarGzPath);
  const zipTemp = tempPathBeside(zipPath);
  const abort = new AbortController();
  const stopTheOther = (error: unknown): never => {
    abort.abort(error);
    throw error;
  };
  try {
    const entries = await listBuildEntries(artifactsDir, options.failures);
    const results = await Promise.allSettled([
      writeTarGz(artifactsDir, entries, tarGzTemp, abort.signal).catch(stopTheOther),
      writeZip(artifactsDir, entries, zipTemp, abort.signal).catch(stopTheOther),
    ]);
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

/**
 * Everything both archives hold, in archive order. The listing (names, not contents) is held in memory so
 * both archives get exactly the same one, even if a late file appears meanwhile; yazl keeps a record per
 * entry until the end anyway.
 */
async function listBuildEntries(artifactsDir: string, failures: readonly string[]): Promise<ArchiveEntry[]> {
  const folders = (await readdir(artifactsDir))
    .map((name) => ({ name, match: ATOM_FOLDER.exec(name) }))
    .filter((folder): folder is { name: string; match: RegExpExecArray } => folder.match !== null)
    // Numeric order (subjob, then atom), so artifact_2_0 comes before artifact_10_0 when the archive is listed.
    .sort((a, b) => Number(a.match[1]) - Number(b.match[1]) || Number(a.match[2]) - Number(b.match[2]))
    .map((folder) => folder.name);
  const entries: ArchiveEntry[] = [];
  for (const name of folders) {
    const stat = await lstat(path.join(artifactsDir, name));
    if (!stat.isDirectory()) {
      continue;
    }
    entries.push({ type: 'directory', path: name, mtime: stat.mtime });
    for await (const entry of walkArchiveEntries(artifactsDir, name)) {
      entries.push(entry);
    }
  }
  if (failures.length > 0) {
    const content = Buffer.from([...failures].sort().join('\n'));
    entries.push({ type: 'content', path: FAILURES_FILE, mtime: new Date(), content });
  }
  return entries;
}

async function writeTarGz(rootDir: string, entries: readonly ArchiveEntry[], target: string, signal: AbortSignal): Promise<void> {
  await pipeline(packTarGz(rootDir, entries), createTarget(target), { signal });
}

const MIN_COMPRESSED_BYTES = 1024;

async function writeZip(rootDir: string, entries: readonly ArchiveEntry[], target: string, signal: AbortSignal): Promise<void> {
  const zip = new ZipFile();
  // yazl makes its output a PassThrough; the assertion gives access to destroy().
  const output = zip.outputStream as Readable;
  // yazl reports a failed read on the ZipFile, not on its output: route it to where pipeline listens.
  zip.on('error', (error: Error) => output.destroy(error));
  let reading: Readable | undefined;
  // yazl pumps one file at a time; if the pipeline stops, the file being read must be closed too.
  output.once('close', () => reading?.destroy());
  for (const entry of entries) {
    switch (entry.type) {
      case 'directory':
        zip.addEmptyDirectory(entry.path, { mtime: entry.mtime });
        break;
      case 'content':
        zip.addBuffer(entry.content, entry.path, { mtime: entry.mtime, mode: 0o100644, compress: entry.content.length >= MIN_COMPRESSED_BYTES });
        break;
      case 'file': {
        const mode = entry.isExecutable ? 0o100755 : 0o100644;
        // Deflating a few bytes gains nothing and costs a zlib stream per entry: most atoms' exit code, time
        // and command files are tiny, and a build has thousands of them.
        const compress = entry.size === undefined || entry.size >= MIN_COMPRESSED_BYTES;
        zip.addReadStreamLazy(entry.path, { mtime: entry.mtime, mode, compress }, (callback) => {
          openArchiveFile(path.join(rootDir, entry.path)).then(
            (handle) => {
              const stream = handle.createReadStream();
              stream.on('error', (error) => output.destroy(error));
              reading = stream;
              callback(null, stream);
            },
            // yazl would only re-emit the error on the ZipFile; end the output with it directly.
            (error: unknown) => output.destroy(error instanceof Error ? error : new Error(String(error))),
          );
        });
        break;
      }
      default: {
        const unexpected: never = entry;
        throw new Error(`unknown archive entry ${JSON.stringify(unexpected)}`);
      }
    }
  }
  zip.end();
  await pipeline(output, createTarget(target), { signal });
}

/** `flush`: the data reaches the disk before the rename, so a crash cannot leave an empty archive in place. */
function createTarget(target: string): WriteStream {
  return createWriteStream(target, { flags: 'wx', flush: true });
}

function tempPathBeside(target: string): string {
  return `${target}.${randomBytes(6).toString('hex')}.tmp`;
}
