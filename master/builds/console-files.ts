import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
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

export async function readConsolePage(path: string, maxLines: number, offsetLine: number | null): Promise<ConsolePage> {
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  return pageConsole(text, maxLines, offsetLine);
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
