/**
 * Moving an atom's artifact folder from a worker to the master as tar.gz, and the tar writer the build
 * archive (master/builds/archive.ts) shares. Both directions stream: neither ever holds a whole archive in
 * memory.
 *
 * Only regular files and folders travel. The worker never follows a symbolic link while packing (one could
 * lead anywhere on its disk), and the master refuses anything else while unpacking, because the archive
 * comes over the network and must be treated as hostile.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { lstat, mkdir, open, readdir } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { pipeline, Readable, Writable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { Header, Parser, Pax } from 'tar';
import type { ReadEntry } from 'tar';
import { ClusterRunnerError, errorMessage } from './errors.ts';

/** What one archive may unpack to. */
export interface ExtractLimits {
  /** Bytes of file content actually written, counted as they arrive (headers are not trusted). */
  readonly maxBytes: number;
  /** Files plus folders. */
  readonly maxEntries: number;
  /** Components of the longest path (`a/b/c` is 3); default 32. */
  readonly maxDepth?: number;
}

export interface ExtractSummary {
  readonly files: number;
  readonly bytes: number;
}

export interface SafeExtractor {
  /**
   * Takes the tar.gz bytes. It never emits 'error': once the archive is refused it swallows whatever is
   * still written, so a writer (an HTTP request body, say) can run to its end while `done` already carries
   * the reason. A writer that wants to cut a hostile sender short destroys its own source.
   */
  readonly input: Writable;
  /**
   * Settles once: resolves after the last file is closed, rejects with a ClusterRunnerError —
   * UNSAFE_ARCHIVE (400), ARCHIVE_TOO_LARGE (413), ARCHIVE_INCOMPLETE (400, `input` destroyed before its
   * end) or ARCHIVE_WRITE_FAILED (500, the local disk). On rejection destDir may hold part of the archive:
   * the caller deletes it.
   */
  readonly done: Promise<ExtractSummary>;
}

/** One item of an archive being written, with its path relative to the folder being packed, `/`-separated. */
export type ArchiveEntry =
  | { readonly type: 'directory'; readonly path: string; readonly mtime: Date }
  | { readonly type: 'file'; readonly path: string; readonly mtime: Date; readonly isExecutable: boolean; readonly size?: number }
  /** Built in memory rather than read from disk (the build archive's `failures.txt`). */
  | { readonly type: 'content'; readonly path: string; readonly mtime: Date; readonly content: Buffer };

const DEFAULT_MAX_DEPTH = 32;
// Linux's NAME_MAX and PATH_MAX: anything longer could not be created anyway, and refusing it up front names
// the entry instead of surfacing ENAMETOOLONG.
const MAX_NAME_BYTES = 255;
const MAX_PATH_BYTES = 4096;
// Pax and GNU long-name records of honest archives hold a path and a few numbers; tar ignores bigger ones,
// and we refuse them.
const MAX_META_ENTRY_BYTES = 16 * 1024;
// The tar framing a well-formed entry may add to its content: its header, a metadata record with its own
// header, and the padding of both to 512-byte blocks.
const ENTRY_OVERHEAD_BYTES = MAX_META_ENTRY_BYTES + 4 * 512;
// End-of-archive blocks and the padding some tar programs add up to their record size (10 KiB for GNU tar).
const TRAILER_BYTES = 1024 * 1024;
const READ_CHUNK_BYTES = 64 * 1024;
const GZIP_FIRST_BYTE = 0x1f;

// O_EXCL refuses a file that already exists, including a symbolic link planted where the file should go;
// O_NOFOLLOW says the same for kernels and file systems that would otherwise follow it.
const CREATE_NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
// O_NONBLOCK: a file swapped for a FIFO between listing and opening would otherwise block open() for ever.
const OPEN_FOR_PACKING = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** A writable that takes tar.gz bytes and unpacks them under destDir, refusing anything unsafe. */
export function createSafeExtractor(destDir: string, limits: ExtractLimits): SafeExtractor {
  const maxDepth = limits.maxDepth ?? DEFAULT_MAX_DEPTH;
  // Bounds the CPU a gzip bomb can burn even where nothing is written (endless zero blocks after the end of
  // the tar, or padding of a refused entry).
  const maxInflatedBytes = limits.maxBytes + (limits.maxEntries + 1) * ENTRY_OVERHEAD_BYTES + TRAILER_BYTES;
  // Decompressing ourselves rather than letting tar sniff the format: Node's gunzip only produces output as
  // fast as we take it, so one small compressed chunk can never expand into a huge buffer.
  const gunzip = createGunzip();
  const parser = new Parser({ maxMetaEntrySize: MAX_META_ENTRY_BYTES, brotli: false, zstd: false });
  const abort = new AbortController();
  // Relative paths of folders known to be real folders (made by us, or checked with lstat): only those are
  // ever entered, so no pre-existing link inside destDir can lead a write outside it.
  const knownFolders = new Set<string>();

  let entryCount = 0;
  let declaredBytes = 0;
  let writtenBytes = 0;
  let fileCount = 0;
  let inflatedBytes = 0;
  let hasSeenFirstByte = false;
  let hasSeenTarEnd = false;
  let isSettled = false;
  let failure: ClusterRunnerError | undefined;
  let waitingWriter: (() => void) | undefined;

  let resolveDone: (summary: ExtractSummary) => void = () => undefined;
  let rejectDone: (error: ClusterRunnerError) => void = () => undefined;
  const done = new Promise<ExtractSummary>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  // The caller may only look at `done` after its pipeline ends; a rejection before then must not count as
  // unhandled (which would stop the process). The caller's own await still sees it.
  done.catch(() => undefined);

  // Steps touching the disk run one at a time, in archive order: a folder entry must exist before the file
  // entries inside it are opened.
  let work: Promise<void> = mkdir(destDir, { recursive: true }).then(
    () => undefined,
    (error: unknown) => fail(writeFailed(error)),
  );
  const enqueue = (step: () => Promise<void>): void => {
    work = work
      .then(() => (failure === undefined ? step() : undefined))
      .catch((error: unknown) => fail(error instanceof ClusterRunnerError ? error : writeFailed(error)));
  };

  function fail(error: ClusterRunnerError): void {
    if (failure !== undefined || isSettled) {
      return;
    }
    failure = error;
    isSettled = true;
    rejectDone(error);
    abort.abort(error);
    // Destroyed without an error, so it emits none: the reason is already in `done`.
    gunzip.destroy();
    releaseWriter();
  }

  function releaseWriter(): void {
    const writer = waitingWriter;
    waitingWriter = undefined;
    writer?.();
  }

  const input = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (failure !== undefined) {
        callback();
      } else if (gunzip.write(chunk)) {
        callback();
      } else {
        waitingWriter = callback;
      }
    },
    final(callback) {
      if (failure === undefined) {
        gunzip.end();
      }
      // 'finish' on input then means the unpacking is over, whichever way it went.
      done.then(
        () => callback(),
        () => callback(),
      );
    },
    destroy(error, callback) {
      fail(
        new ClusterRunnerError('ARCHIVE_INCOMPLETE', 'the archive stopped arriving before its end', {
          status: 400,
          cause: error ?? undefined,
        }),
      );
      callback(error);
    },
  });

  gunzip.on('drain', releaseWriter);
  gunzip.on('error', (error: Error) => fail(corrupt(`is not valid gzip (${error.message})`, error)));
  gunzip.on('data', (chunk: Buffer) => {
    inflatedBytes += chunk.length;
    if (inflatedBytes > maxInflatedBytes) {
      fail(tooLarge(`unpacks to more than ${maxInflatedBytes} bytes of tar`));
      return;
    }
    if (failure !== undefined || hasSeenTarEnd) {
      // After tar's end-of-archive blocks the parser would only buffer what follows; the rest is still
      // decompressed so gzip checks its CRC, within the bound above.
      return;
    }
    if (!hasSeenFirstByte) {
      hasSeenFirstByte = true;
      // tar sniffs gzip inside what we feed it and would inflate a nested archive itself, outside our limits.
      // A tar header starts with the first path, and no path starts with this control character.
      if (chunk[0] === GZIP_FIRST_BYTE) {
        fail(corrupt('holds a compressed archive inside the gzip stream'));
        return;
      }
    }
    let isParserReady: boolean;
    try {
      isParserReady = parser.write(chunk);
    } catch (error) {
      fail(corrupt(`is not a valid tar archive (${errorMessage(error)})`, error));
      return;
    }
    if (!isParserReady) {
      gunzip.pause();
    }
  });
  gunzip.on('end', () => {
    if (failure === undefined) {
      parser.end();
    }
  });

  parser.on('drain', () => {
    if (failure === undefined) {
      gunzip.resume();
    }
  });
  parser.on('eof', () => {
    hasSeenTarEnd = true;
  });
  parser.on('warn', (code: string, message: string) => {
    // tar calls an archive holding nothing but its end blocks "unrecognized", yet that is exactly what an
    // empty folder packs to.
    if (code === 'TAR_BAD_ARCHIVE' && hasSeenTarEnd && entryCount === 0) {
      return;
    }
    fail(corrupt(`is not a valid tar archive (${message})`));
  });
  parser.on('error', (error: Error) => fail(corrupt(`is not a valid tar archive (${error.message})`, error)));
  // Entries of a type tar does not know, and metadata records over the size limit.
  parser.on('ignoredEntry', (entry: ReadEntry) => {
    fail(unsafeEntry(entry.path, entry.meta ? 'carries an oversized metadata record' : `has the unsupported type ${entry.type}`));
  });
  parser.on('entry', (entry: ReadEntry) => {
    if (failure !== undefined) {
      return;
    }
    try {
      acceptEntry(entry);
    } catch (error) {
      fail(error instanceof ClusterRunnerError ? error : corrupt(errorMessage(error), error));
    }
  });
  parser.on('end', () => {
    void work.then(() => {
      if (failure === undefined && !isSettled) {
        isSettled = true;
        resolveDone({ files: fileCount, bytes: writtenBytes });
      }
    });
  });

  function acceptEntry(entry: ReadEntry): void {
    entryCount += 1;
    if (entryCount > limits.maxEntries) {
      throw tooLarge(`holds more than ${limits.maxEntries} files and folders`);
    }
    const parts = splitEntryPath(entry.path, maxDepth);
    switch (entry.type) {
      case 'Directory':
        // Nothing to read, but the parser waits for the entry to end before it goes on.
        entry.resume();
        enqueue(() => ensureFolder(parts, entry.path));
        return;
      case 'File':
      case 'OldFile':
      case 'ContiguousFile': {
        if (parts.length === 0) {
          throw unsafeEntry(entry.path, 'is a file without a name');
        }
        // Refusing early on the declared size saves writing a doomed file; the written bytes are still
        // counted, because that count is the one that protects the disk.
        declaredBytes += entry.size;
        if (declaredBytes > limits.maxBytes) {
          throw tooLarge(`holds more than ${limits.maxBytes} bytes (at ${describePath(entry.path)})`);
        }
        enqueue(() => writeFile(entry, parts));
        return;
      }
      case 'SymbolicLink':
        throw unsafeEntry(entry.path, `is a symbolic link to ${describePath(entry.linkpath ?? '')}`);
      case 'Link':
        throw unsafeEntry(entry.path, `is a hard link to ${describePath(entry.linkpath ?? '')}`);
      default:
        throw unsafeEntry(entry.path, `is a ${entry.type}; only files and folders may be unpacked`);
    }
  }

  async function ensureFolder(parts: readonly string[], entryPath: string): Promise<void> {
    for (let depth = 1; depth <= parts.length; depth += 1) {
      const relative = parts.slice(0, depth).join('/');
      if (knownFolders.has(relative)) {
        continue;
      }
      const absolute = path.join(destDir, relative);
      try {
        await mkdir(absolute, { mode: 0o755 });
      } catch (error) {
        if (!hasErrorCode(error, 'EEXIST')) {
          throw error;
        }
        const stat = await lstat(absolute);
        if (!stat.isDirectory()) {
          throw unsafeEntry(entryPath, `needs ${describePath(relative)} to be a folder, but something else is there`);
        }
      }
      knownFolders.add(relative);
    }
  }

  async function writeFile(entry: ReadEntry, parts: readonly string[]): Promise<void> {
    await ensureFolder(parts.slice(0, -1), entry.path);
    let handle: FileHandle;
    try {
      handle = await open(path.join(destDir, ...parts), CREATE_NEW_FILE, (entry.mode ?? 0) & 0o111 ? 0o755 : 0o644);
    } catch (error) {
      if (hasErrorCode(error, 'EEXIST') || hasErrorCode(error, 'ELOOP')) {
        throw unsafeEntry(entry.path, 'names something already unpacked (it appears twice)');
      }
      throw error;
    }
    fileCount += 1;
    try {
      await copyEntryBody(entry, handle, abort.signal, (byteCount) => {
        writtenBytes += byteCount;
        if (writtenBytes > limits.maxBytes) {
          throw tooLarge(`holds more than ${limits.maxBytes} bytes (at ${describePath(entry.path)})`);
        }
      });
    } finally {
      await handle.close();
    }
  }

  return { input, done };
}

/**
 * Writes the entry's content to the handle, one chunk at a time: the entry stays paused while a chunk is
 * on its way to disk, which holds the parser, gunzip and finally the writer of `input`. `countBytes` runs
 * before each chunk is written and throws to refuse it.
 */
function copyEntryBody(
  entry: ReadEntry,
  handle: FileHandle,
  signal: AbortSignal,
  countBytes: (byteCount: number) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let writing: Promise<void> = Promise.resolve();
    let isStopped = false;

    const stop = (error?: unknown): void => {
      if (isStopped) {
        return;
      }
      isStopped = true;
      entry.removeListener('data', onData);
      entry.removeListener('end', onEnd);
      signal.removeEventListener('abort', onAbort);
      // A write still in flight must land before the caller closes the handle.
      const settle = (): void => (error === undefined ? resolve() : reject(error));
      writing.then(settle, settle);
    };
    const onData = (chunk: Buffer): void => {
      try {
        countBytes(chunk.length);
      } catch (error) {
        stop(error);
        return;
      }
      entry.pause();
      writing = writeFully(handle, chunk).then(() => {
        if (!isStopped) {
          entry.resume();
        }
      });
      writing.catch(stop);
    };
    // Minipass may announce the end while the last chunk is still being written.
    const onEnd = (): void => {
      writing.then(() => stop(), stop);
    };
    const onAbort = (): void => stop(signal.reason);

    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    entry.on('data', onData);
    entry.on('end', onEnd);
    entry.resume();
  });
}

async function writeFully(handle: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
    offset += bytesWritten;
  }
}

/** The path's components below destDir, or a refusal naming the entry. */
function splitEntryPath(rawPath: string, maxDepth: number): string[] {
  if (rawPath.includes('\0')) {
    throw unsafeEntry(rawPath, 'has a NUL character in its path');
  }
  if (rawPath.includes('\\')) {
    throw unsafeEntry(rawPath, 'has a backslash in its path, which Windows and zip read as a separator');
  }
  if (rawPath.startsWith('/') || /^[A-Za-z]:/.test(rawPath)) {
    throw unsafeEntry(rawPath, 'has an absolute path');
  }
  if (Buffer.byteLength(rawPath) > MAX_PATH_BYTES) {
    throw unsafeEntry(rawPath, `has a path longer than ${MAX_PATH_BYTES} bytes`);
  }
  const parts = rawPath.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) {
    throw unsafeEntry(rawPath, 'climbs out of its folder with ".."');
  }
  if (parts.length > maxDepth) {
    throw unsafeEntry(rawPath, `is nested deeper than ${maxDepth} levels`);
  }
  if (parts.some((part) => Buffer.byteLength(part) > MAX_NAME_BYTES)) {
    throw unsafeEntry(rawPath, `has a name longer than ${MAX_NAME_BYTES} bytes`);
  }
  return parts;
}

/** Streams the contents of dir (relative paths, no leading folder) as tar.gz. Regular files and folders only: symlinks and special files are skipped (never followed). */
export function packDirectory(dir: string): Readable {
  return packTarGz(dir, walkArchiveEntries(dir));
}

/**
 * Streams the entries as tar.gz; `file` entries are read from rootDir when their turn comes. A file that
 * shrinks while it is read fails the stream (a short entry would shift every later header), one that grows
 * is cut at the size it had when opened.
 */
export function packTarGz(rootDir: string, entries: AsyncIterable<ArchiveEntry> | Iterable<ArchiveEntry>): Readable {
  const gzip = createGzip();
  pipeline(Readable.from(coalesceChunks(generateTar(rootDir, entries)), { objectMode: false }), gzip, () => {
    // pipeline has already destroyed gzip with the error, which is how the reader learns of it; and when the
    // reader gave up first, ending the generator closed the file being read.
  });
  return gzip;
}

/**
 * Joins small pieces (a 512-byte header, a few bytes of content) into chunks of about 64 KiB: a stream
 * write or a zlib call per piece costs far more than the piece, and an archive has hundreds of thousands.
 */
export async function* coalesceChunks(pieces: AsyncIterable<Buffer>, targetBytes = 64 * 1024): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const piece of pieces) {
    if (piece.length >= targetBytes && pendingBytes === 0) {
      yield piece;
      continue;
    }
    pending.push(piece);
    pendingBytes += piece.length;
    if (pendingBytes >= targetBytes) {
      yield Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

async function* generateTar(
  rootDir: string,
  entries: AsyncIterable<ArchiveEntry> | Iterable<ArchiveEntry>,
): AsyncGenerator<Buffer> {
  for await (const entry of entries) {
    switch (entry.type) {
      case 'directory':
        yield encodeTarHeader({ path: `${entry.path}/`, type: 'Directory', mode: 0o755, size: 0, mtime: entry.mtime });
        break;
      case 'content':
        yield encodeTarHeader({ path: entry.path, type: 'File', mode: 0o644, size: entry.content.length, mtime: entry.mtime });
        yield entry.content;
        yield blockPadding(entry.content.length);
        break;
      case 'file':
        yield* generateTarFile(rootDir, entry);
        break;
      default: {
        const unexpected: never = entry;
        throw new Error(`unknown archive entry ${JSON.stringify(unexpected)}`);
      }
    }
  }
  // End of archive: two empty blocks.
  yield Buffer.alloc(1024);
}

async function* generateTarFile(
  rootDir: string,
  entry: Extract<ArchiveEntry, { type: 'file' }>,
): AsyncGenerator<Buffer> {
  const handle = await openArchiveFile(path.join(rootDir, entry.path));
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      throw artifactChanged(entry.path, 'is no longer a regular file');
    }
    const size = stat.size;
    yield encodeTarHeader({ path: entry.path, type: 'File', mode: entry.isExecutable ? 0o755 : 0o644, size, mtime: entry.mtime });
    let position = 0;
    while (position < size) {
      const length = Math.min(READ_CHUNK_BYTES, size - position);
      const { bytesRead, buffer } = await handle.read(Buffer.allocUnsafe(length), 0, length, position);
      if (bytesRead === 0) {
        throw artifactChanged(entry.path, 'shrank while it was being packed');
      }
      position += bytesRead;
      yield bytesRead === length ? buffer : buffer.subarray(0, bytesRead);
    }
    yield blockPadding(size);
  } finally {
    await handle.close();
  }
}

/** Opens a file to pack without following a link, and without hanging on a FIFO swapped in for it. */
export function openArchiveFile(filePath: string): Promise<FileHandle> {
  return open(filePath, OPEN_FOR_PACKING);
}

function encodeTarHeader(data: {
  path: string;
  type: 'File' | 'Directory';
  mode: number;
  size: number;
  mtime: Date;
}): Buffer {
  // No owner: numeric ids of a worker mean nothing on the master or to whoever downloads the archive.
  const header = new Header(data);
  const block = zeroedBuffer(512);
  const needsPax = header.encode(block, 0);
  if (!needsPax) {
    return block;
  }
  // ustar fits 255-byte paths and 8 GiB sizes; larger ones go in a pax record first, as tar's own writer does.
  return Buffer.concat([new Pax({ path: data.path, size: data.size, mtime: data.mtime }).encode(), block]);
}

/**
 * A zero-filled buffer from Node's shared pool when small: Buffer.alloc gives each one its own memory, and
 * the build archive makes several per atom (issue 18: a sixth of its time was allocation and its collection).
 * Only for buffers that are copied on (into a stream's chunk) rather than kept.
 */
export function zeroedBuffer(size: number): Buffer {
  return Buffer.allocUnsafe(size).fill(0);
}

/** Read-only zeros that every entry's padding is a view of: an allocation per entry showed in profiles. */
const ZERO_BLOCK = Buffer.alloc(512);

function blockPadding(size: number): Buffer {
  return ZERO_BLOCK.subarray(0, (512 - (size % 512)) % 512);
}

/**
 * How many file-system calls a walk given a LoopBudget makes before it lets the event loop turn. Its calls
 * are synchronous: on this kind of VM a promise-based lstat cost about ten times its system call in
 * thread-pool hand-offs, and a 1000-atom build's archive was mostly that (issue 18). The budget bounds how
 * long a walk holds the loop.
 */
const FS_CALLS_PER_TURN = 64;

/** Counts synchronous calls and lets the event loop turn once every `perTurn` of them. */
export class LoopBudget {
  readonly #perTurn: number;
  #spent = 0;

  constructor(perTurn = FS_CALLS_PER_TURN) {
    this.#perTurn = perTurn;
  }

  async spend(): Promise<void> {
    if (++this.#spent < this.#perTurn) return;
    this.#spent = 0;
    await nextTurn();
  }
}

/**
 * The folders and regular files under rootDir/under (not `under` itself), a folder before its contents,
 * names in default string order. Symbolic links are skipped, never followed; so are sockets, FIFOs and
 * devices, and names that cannot travel (see isArchivableName).
 *
 * With a budget the calls are synchronous, a bounded number per turn: for the master's own results folder on
 * its local disk. Without one they are promise-based: a project or an atom's folder may sit on a slow mount,
 * and a stuck call must not hold the whole loop (heartbeats included).
 */
export async function* walkArchiveEntries(rootDir: string, under = '', budget: LoopBudget | null = null): AsyncGenerator<ArchiveEntry> {
  const folder = path.join(rootDir, under);
  const names = (budget === null ? await readdir(folder) : await budget.spend().then(() => readdirSync(folder))).sort();
  for (const name of names) {
    if (!isArchivableName(name)) {
      continue;
    }
    const relative = under === '' ? name : `${under}/${name}`;
    const target = path.join(rootDir, relative);
    const stat = budget === null ? await lstat(target) : await budget.spend().then(() => lstatSync(target));
    if (stat.isDirectory()) {
      yield { type: 'directory', path: relative, mtime: stat.mtime };
      yield* walkArchiveEntries(rootDir, relative, budget);
    } else if (stat.isFile()) {
      yield { type: 'file', path: relative, mtime: stat.mtime, isExecutable: (stat.mode & 0o111) !== 0, size: stat.size };
    }
  }
}

/**
 * A small file's content, read in one go with the same care as packing (no link followed, no FIFO waited on);
 * null when it is no longer a regular file or has grown past maxBytes (the caller then packs it as a file,
 * which reports the change).
 */
export function readSmallArchiveFile(filePath: string, maxBytes: number): Buffer | null {
  const fd = openSync(filePath, OPEN_FOR_PACKING);
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile() || stat.size > maxBytes) return null;
    const content = Buffer.allocUnsafe(stat.size);
    let length = 0;
    while (length < content.length) {
      const read = readSync(fd, content, length, content.length - length, null);
      if (read === 0) break;
      length += read;
    }
    return length === content.length ? content : content.subarray(0, length);
  } finally {
    closeSync(fd);
  }
}

/**
 * False for names the extractor refuses (a backslash, or a drive letter, which Windows and zip readers take
 * as path syntax); skipping them while packing keeps one odd file name from losing an atom's whole folder.
 */
export function isArchivableName(name: string): boolean {
  return !name.includes('\\') && !/^[A-Za-z]:/.test(name) && Buffer.byteLength(name) <= MAX_NAME_BYTES;
}

function describePath(entryPath: string): string {
  // Hostile paths can be long and hold control characters; quote and cut them for logs and responses.
  const shown = entryPath.length > 200 ? `${entryPath.slice(0, 200)}…` : entryPath;
  return JSON.stringify(shown);
}

function unsafeEntry(entryPath: string, reason: string): ClusterRunnerError {
  return new ClusterRunnerError('UNSAFE_ARCHIVE', `archive entry ${describePath(entryPath)} ${reason}`, { status: 400 });
}

function corrupt(reason: string, cause?: unknown): ClusterRunnerError {
  return new ClusterRunnerError('UNSAFE_ARCHIVE', `the archive ${reason}`, { status: 400, cause });
}

function tooLarge(reason: string): ClusterRunnerError {
  return new ClusterRunnerError('ARCHIVE_TOO_LARGE', `the archive ${reason}`, { status: 413 });
}

function writeFailed(cause: unknown): ClusterRunnerError {
  return new ClusterRunnerError('ARCHIVE_WRITE_FAILED', `could not unpack the archive: ${errorMessage(cause)}`, {
    status: 500,
    cause,
  });
}

function artifactChanged(entryPath: string, reason: string): ClusterRunnerError {
  return new ClusterRunnerError('ARTIFACT_CHANGED', `${describePath(entryPath)} ${reason}`, { status: 500 });
}

function hasErrorCode(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}
