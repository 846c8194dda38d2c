import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { open, type FileHandle } from 'node:fs/promises';
import { badRequest } from '../../shared/errors.ts';
import { CONSOLE_FILE } from './results-layout.ts';

export interface ConsolePage {
  readonly offset_line: number;
  readonly num_lines: number;
  readonly total_num_lines: number;
  readonly content: string;
}

/**
 * SPEC §2.2 paging. Only complete (newline-ended) lines count: a line still being written is not shown
 * until its newline arrives. Without offsetLine: the last maxLines lines.
 */
export function pageConsole(text: string, maxLines: number, offsetLine: number | null): ConsolePage {
  if (!Number.isInteger(maxLines) || maxLines <= 0) throw badRequest('max_lines must be a positive integer.');
  if (offsetLine !== null && (!Number.isInteger(offsetLine) || offsetLine < 0)) {
    throw badRequest('offset_line must be a non-negative integer.');
  }
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  const lines = complete === '' ? [] : complete.slice(0, -1).split('\n');
  const total = lines.length;
  let start: number;
  if (offsetLine === null) start = Math.max(0, total - maxLines);
  else if (offsetLine > total) throw badRequest(`offset_line ${offsetLine} is past the end of the output (${total} lines).`);
  else start = offsetLine;
  const page = lines.slice(start, start + maxLines);
  return {
    offset_line: start,
    num_lines: page.length,
    total_num_lines: total,
    content: page.length === 0 ? '' : `${page.join('\n')}\n`,
  };
}

/** The most lines one console answer holds; a larger max_lines is served as this (README, API). */
export const MAX_CONSOLE_PAGE_LINES = 10_000;
/** The most content bytes one console answer holds; lines past it are left for the next page, a longer line is cut. */
export const MAX_CONSOLE_PAGE_BYTES = 1024 * 1024;
/** Every this many lines the index keeps the line's start offset: 60 MiB of short lines is a few hundred numbers. */
const CHECKPOINT_LINES = 1024;
/** Files are read in pieces this size, each an await apart, so no request holds the event loop for a whole file. */
const READ_CHUNK_BYTES = 256 * 1024;
const NEWLINE = 0x0a;

/** What is known of one console file: complete lines counted up to `scannedBytes` (just past a newline). */
interface LineIndex {
  ino: number;
  scannedBytes: number;
  lines: number;
  /** checkpoints[k]: the byte offset where line k * CHECKPOINT_LINES starts. */
  readonly checkpoints: number[];
  /** One scan at a time per file: concurrent readers wait for it instead of scanning again. */
  scanning: Promise<void> | null;
  /** fingerprint() when the scan ended. */
  fingerprint: string;
}

/** Indexes of recently read console files, least recently used first; bounded so many atoms cannot grow it. */
const indexes = new Map<string, LineIndex>();
const MAX_INDEXES = 512;

async function readAt(handle: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  const { bytesRead } = await handle.read(buffer, 0, length, position);
  return buffer.subarray(0, bytesRead);
}

/** Counts the complete lines between index.scannedBytes and size, a chunk per await. */
async function extendIndex(handle: FileHandle, index: LineIndex, size: number): Promise<void> {
  let position = index.scannedBytes;
  while (position < size) {
    const chunk = await readAt(handle, position, Math.min(READ_CHUNK_BYTES, size - position));
    if (chunk.length === 0) break;
    let from = 0;
    for (let at = chunk.indexOf(NEWLINE, from); at !== -1; at = chunk.indexOf(NEWLINE, from)) {
      index.lines++;
      from = at + 1;
      index.scannedBytes = position + from;
      if (index.lines % CHECKPOINT_LINES === 0) index.checkpoints.push(index.scannedBytes);
    }
    position += chunk.length;
  }
}

/** The bytes that end the indexed part and those that start the file: if either changed, the file was rewritten. */
async function fingerprint(handle: FileHandle, scannedBytes: number): Promise<string> {
  if (scannedBytes === 0) return '';
  const head = await readAt(handle, 0, Math.min(FINGERPRINT_BYTES, scannedBytes));
  const tail = await readAt(handle, Math.max(0, scannedBytes - FINGERPRINT_BYTES), Math.min(FINGERPRINT_BYTES, scannedBytes));
  return `${head.toString('base64')}/${tail.toString('base64')}`;
}
const FINGERPRINT_BYTES = 64;

async function lineIndex(path: string, handle: FileHandle): Promise<LineIndex> {
  const info = await handle.stat();
  let index = indexes.get(path);
  // A file replaced, cut short or rewritten in place (the worker's final copy of the output replaces the
  // live one) is indexed again from the start.
  if (index && (index.ino !== info.ino || info.size < index.scannedBytes)) index = undefined;
  if (index && index.scanning === null && (await fingerprint(handle, index.scannedBytes)) !== index.fingerprint) index = undefined;
  const current: LineIndex = index ?? { ino: info.ino, scannedBytes: 0, lines: 0, checkpoints: [0], scanning: null, fingerprint: '' };
  indexes.delete(path);
  indexes.set(path, current);
  if (indexes.size > MAX_INDEXES) indexes.delete(indexes.keys().next().value!);
  while (current.scanning) await current.scanning;
  if (info.size > current.scannedBytes) {
    const scan = extendIndex(handle, current, info.size).then(async () => {
      current.fingerprint = await fingerprint(handle, current.scannedBytes);
    });
    current.scanning = scan.finally(() => {
      current.scanning = null;
    });
    await current.scanning;
  }
  return current;
}

/** The byte offset where `line` starts, reading forward from the checkpoint before it. */
async function lineStart(handle: FileHandle, index: LineIndex, line: number): Promise<number> {
  const checkpoint = Math.floor(line / CHECKPOINT_LINES);
  let position = index.checkpoints[checkpoint]!;
  let toSkip = line - checkpoint * CHECKPOINT_LINES;
  while (toSkip > 0) {
    const chunk = await readAt(handle, position, Math.min(READ_CHUNK_BYTES, index.scannedBytes - position));
    if (chunk.length === 0) break;
    let from = 0;
    while (toSkip > 0) {
      const at = chunk.indexOf(NEWLINE, from);
      if (at === -1) break;
      from = at + 1;
      toSkip--;
    }
    position += toSkip > 0 ? chunk.length : from;
  }
  return position;
}

/**
 * SPEC §2.2 paging served from the file: a line index (a start offset every 1024 lines, kept per file and
 * extended as the file grows) finds the page, and only the page is read. At most MAX_CONSOLE_PAGE_LINES
 * lines and MAX_CONSOLE_PAGE_BYTES bytes: num_lines says how many came, so a client pages on from there.
 */
export async function readConsolePage(path: string, maxLines: number, offsetLine: number | null): Promise<ConsolePage> {
  if (!Number.isInteger(maxLines) || maxLines <= 0) throw badRequest('max_lines must be a positive integer.');
  if (offsetLine !== null && (!Number.isInteger(offsetLine) || offsetLine < 0)) {
    throw badRequest('offset_line must be a non-negative integer.');
  }
  const lines = Math.min(maxLines, MAX_CONSOLE_PAGE_LINES);
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    return pageConsole('', lines, offsetLine);
  }
  try {
    const index = await lineIndex(path, handle);
    const total = index.lines;
    let start: number;
    if (offsetLine === null) start = Math.max(0, total - lines);
    else if (offsetLine > total) throw badRequest(`offset_line ${offsetLine} is past the end of the output (${total} lines).`);
    else start = offsetLine;
    const wanted = Math.min(lines, total - start);
    if (wanted === 0) return { offset_line: start, num_lines: 0, total_num_lines: total, content: '' };
    const from = await lineStart(handle, index, start);
    const piece = await readAt(handle, from, Math.min(MAX_CONSOLE_PAGE_BYTES, index.scannedBytes - from));
    let end = 0;
    let count = 0;
    while (count < wanted) {
      const at = piece.indexOf(NEWLINE, end);
      if (at === -1) break;
      end = at + 1;
      count++;
    }
    if (count === 0) {
      // One line longer than a whole answer: its first part, cut where a character starts, marked.
      let cut = piece.length;
      while (cut > 0 && (piece[cut]! & 0xc0) === 0x80) cut--;
      const note = `[ClusterRunner: line cut at ${MAX_CONSOLE_PAGE_BYTES} bytes per answer]`;
      return { offset_line: start, num_lines: 1, total_num_lines: total, content: `${piece.subarray(0, cut).toString('utf8')}${note}\n` };
    }
    return { offset_line: start, num_lines: count, total_num_lines: total, content: piece.subarray(0, end).toString('utf8') };
  } finally {
    await handle.close();
  }
}

/**
 * Appends one atom's live output to its console file as it arrives, up to a byte limit; past the limit the
 * rest is dropped and one note says so, so a runaway atom cannot fill the master's disk. The atom's folder
 * and file are made at the first output: most atoms of a big suite print little or nothing, and a file
 * per atom that never gets a byte is pure overhead (the archive still holds an empty console file).
 */
export class ConsoleWriter {
  readonly #dir: string;
  readonly #path: string;
  readonly #maxBytes: number;
  #stream: WriteStream | null = null;
  #bytes = 0;
  #isTruncated = false;
  #closed: Promise<void> | null = null;
  #error: Error | null = null;
  readonly #flags: 'w' | 'a';

  /**
   * append: go on with the output of a run that started before this master did (a resumed lease), whose
   * file already holds initialBytes.
   */
  constructor(dir: string, maxBytes: number, options: { append?: boolean; initialBytes?: number } = {}) {
    this.#flags = options.append === true ? 'a' : 'w';
    this.#bytes = options.initialBytes ?? 0;
    this.#dir = dir;
    this.#path = join(dir, CONSOLE_FILE);
    this.#maxBytes = maxBytes;
  }

  write(data: string): void {
    if (this.#isTruncated || this.#closed || this.#error || data.length === 0) return;
    const stream = this.#stream ?? this.#open();
    if (stream === null) return;
    const bytes = Buffer.byteLength(data);
    if (this.#bytes + bytes > this.#maxBytes) {
      this.#isTruncated = true;
      // Keep exactly max_console_bytes: the part that fits, cut where a character starts.
      const encoded = Buffer.from(data);
      let cut = this.#maxBytes - this.#bytes;
      while (cut > 0 && (encoded[cut]! & 0xc0) === 0x80) cut--;
      if (cut > 0) stream.write(encoded.subarray(0, cut));
      stream.write(`\n[ClusterRunner: console output cut at ${this.#maxBytes} bytes (max_console_bytes)]\n`);
      return;
    }
    this.#bytes += bytes;
    stream.write(data);
  }

  /** Resolves once everything is on disk; rejects if the file could not be written (a full disk). */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve, reject) => {
      const stream = this.#stream;
      if (stream === null) {
        if (this.#error) reject(this.#error);
        else resolve();
        return;
      }
      stream.end(() => (this.#error ? reject(this.#error) : resolve()));
      stream.once('error', reject);
    });
    return this.#closed;
  }

  #open(): WriteStream | null {
    try {
      // Synchronous, once per atom that prints: the writes queued behind it keep their order for free.
      mkdirSync(this.#dir, { recursive: true });
    } catch (error) {
      this.#error = error as Error;
      return null;
    }
    const stream = createWriteStream(this.#path, { flags: this.#flags });
    stream.on('error', (error) => {
      this.#error = error;
    });
    this.#stream = stream;
    return stream;
  }
}
