import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CONSOLE_FILE, type ResultsLayout } from '../builds/results-layout.ts';
import type { ConsoleChunk } from './stream-client.ts';

/** At most this much of one atom's output goes out per tick; a flood is sent at this pace, never all at once. */
export const MAX_CONSOLE_CHUNK_BYTES = 64 * 1024;

interface WatchedAtom {
  readonly subjobId: number;
  readonly atomId: number;
  offset: number;
  /** Set when the atom has finished: one more read picks up its last lines, then it is dropped. */
  isFinishing: boolean;
}

/** Cuts after the last newline (whole lines only), or for a line longer than the chunk, at a UTF-8 boundary. */
function wholeText(bytes: Buffer, isFull: boolean): Buffer {
  const newline = bytes.lastIndexOf(0x0a);
  if (newline >= 0) return bytes.subarray(0, newline + 1);
  if (!isFull) return bytes.subarray(0, 0);
  let end = bytes.length;
  // Step back over continuation bytes (10xxxxxx) to the start of the last character, and leave it out.
  while (end > 0 && (bytes[end - 1]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, Math.max(0, end - 1));
}

/**
 * Follows the console files of one build's running atoms (the files the build manager writes as output
 * arrives) and hands out new complete lines. Reading the files rather than hooking the output path keeps
 * the stream off the per-message path: a slow or absent reader costs the workers nothing, and output is
 * batched per tick ("throttled").
 */
export class BuildConsoleTail {
  readonly buildId: number;
  readonly #layout: ResultsLayout;
  readonly #atoms = new Map<string, WatchedAtom>();
  #isReading = false;

  constructor(buildId: number, layout: ResultsLayout) {
    this.buildId = buildId;
    this.#layout = layout;
  }

  #path(atom: { subjobId: number; atomId: number }): string {
    return join(this.#layout.atomDir(this.buildId, atom.subjobId, atom.atomId), CONSOLE_FILE);
  }

  /** An atom that is running: its output is followed from `offset` (its current end when unknown). */
  async follow(subjobId: number, atomId: number, fromStart: boolean): Promise<void> {
    const key = `${subjobId}/${atomId}`;
    const known = this.#atoms.get(key);
    if (known) {
      known.isFinishing = false;
      if (fromStart) known.offset = 0;
      return;
    }
    const atom: WatchedAtom = { subjobId, atomId, offset: 0, isFinishing: false };
    this.#atoms.set(key, atom);
    if (!fromStart) atom.offset = await this.#size(atom);
  }

  finish(subjobId: number, atomId: number): void {
    const atom = this.#atoms.get(`${subjobId}/${atomId}`);
    if (atom) atom.isFinishing = true;
  }

  /** The last lines (up to one chunk) before each followed atom's current offset: a new client's start. */
  async tails(): Promise<ConsoleChunk[]> {
    const chunks: ConsoleChunk[] = [];
    for (const atom of this.#atoms.values()) {
      const start = Math.max(0, atom.offset - MAX_CONSOLE_CHUNK_BYTES);
      let bytes = await this.#read(atom, start, atom.offset - start);
      if (start > 0) bytes = bytes.subarray(bytes.indexOf(0x0a) + 1);
      if (bytes.length > 0) chunks.push(this.#chunk(atom, atom.offset - bytes.length, bytes));
    }
    return chunks;
  }

  /** New output since the last call, one bounded chunk per atom. */
  async poll(): Promise<ConsoleChunk[]> {
    if (this.#isReading) return [];
    this.#isReading = true;
    try {
      const chunks: ConsoleChunk[] = [];
      for (const [key, atom] of this.#atoms) {
        const size = await this.#size(atom);
        // A new attempt starts a new console file.
        if (size < atom.offset) atom.offset = 0;
        if (size > atom.offset) {
          const length = Math.min(size - atom.offset, MAX_CONSOLE_CHUNK_BYTES);
          const bytes = wholeText(await this.#read(atom, atom.offset, length), length === MAX_CONSOLE_CHUNK_BYTES);
          if (bytes.length > 0) {
            chunks.push(this.#chunk(atom, atom.offset, bytes));
            atom.offset += bytes.length;
          }
          if (atom.offset < size) continue;
        }
        if (atom.isFinishing) this.#atoms.delete(key);
      }
      return chunks;
    } finally {
      this.#isReading = false;
    }
  }

  #chunk(atom: WatchedAtom, offset: number, bytes: Buffer): ConsoleChunk {
    return { build_id: this.buildId, subjob_id: atom.subjobId, atom_id: atom.atomId, offset, data: bytes.toString('utf8') };
  }

  async #size(atom: WatchedAtom): Promise<number> {
    try {
      return (await stat(this.#path(atom))).size;
    } catch {
      return 0; // no output yet: the file is made at the first byte
    }
  }

  async #read(atom: WatchedAtom, position: number, length: number): Promise<Buffer> {
    if (length <= 0) return Buffer.alloc(0);
    let file;
    try {
      file = await open(this.#path(atom), 'r');
    } catch {
      return Buffer.alloc(0);
    }
    try {
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await file.read(buffer, 0, length, position);
      return buffer.subarray(0, bytesRead);
    } finally {
      await file.close();
    }
  }
}
