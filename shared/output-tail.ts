/**
 * Keeps only the last maxBytes of a stream of output (for error messages), cutting at a line start when it can.
 *
 * The bytes live in one ring buffer of exactly maxBytes, allocated on the first push: keeping the pushed
 * chunks themselves would also keep whatever larger buffers they are slices of.
 */
export class OutputTail {
  readonly #maxBytes: number;
  #ring: Buffer | undefined;
  /** Index in the ring of the oldest kept byte. */
  #start = 0;
  #keptBytes = 0;
  #totalBytes = 0;

  /** maxBytes: how many of the last bytes to keep, a positive integer. */
  constructor(maxBytes: number) {
    if (!Number.isInteger(maxBytes) || maxBytes <= 0) {
      throw new RangeError(`maxBytes must be a positive integer, not ${maxBytes}`);
    }
    this.#maxBytes = maxBytes;
  }

  /** Every byte ever pushed, kept or not. */
  get totalBytes(): number {
    return this.#totalBytes;
  }

  push(chunk: Buffer | string): void {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    if (bytes.length === 0) return;
    this.#totalBytes += bytes.length;
    const ring = (this.#ring ??= Buffer.alloc(this.#maxBytes));
    const max = this.#maxBytes;
    if (bytes.length >= max) {
      bytes.copy(ring, 0, bytes.length - max);
      this.#start = 0;
      this.#keptBytes = max;
      return;
    }
    const writeAt = (this.#start + this.#keptBytes) % max;
    const firstPart = Math.min(bytes.length, max - writeAt);
    bytes.copy(ring, writeAt, 0, firstPart);
    if (firstPart < bytes.length) bytes.copy(ring, 0, firstPart);
    const kept = this.#keptBytes + bytes.length;
    if (kept > max) {
      this.#start = (this.#start + kept - max) % max;
      this.#keptBytes = max;
    } else {
      this.#keptBytes = kept;
    }
  }

  /**
   * The kept text (UTF-8), at most the last maxLines lines when given; when anything was left out, a first
   * line says how much, e.g. `[… 1234 bytes cut …]`.
   */
  text(maxLines?: number): string {
    let bytes = this.#keptContents();
    let cutBytes = this.#totalBytes - bytes.length;
    if (cutBytes > 0) {
      const newline = bytes.indexOf(0x0a);
      // A partial first line would mislead; drop it unless it is all there is.
      const from = newline >= 0 && newline < bytes.length - 1 ? newline + 1 : continuationBytesAt(bytes);
      cutBytes += from;
      bytes = bytes.subarray(from);
    }
    let text = bytes.toString('utf8');
    if (maxLines !== undefined) {
      const lines = text.split('\n');
      const endsWithNewline = text.endsWith('\n');
      // A trailing newline ends the last line; it does not start another one.
      const lineCount = endsWithNewline ? lines.length - 1 : lines.length;
      const keepLines = Math.max(0, Math.floor(maxLines));
      if (lineCount > keepLines) {
        const kept = lines.slice(lineCount - keepLines).join('\n');
        cutBytes += Buffer.byteLength(text) - Buffer.byteLength(kept);
        text = kept;
      }
    }
    return cutBytes > 0 ? `[… ${cutBytes} bytes cut …]\n${text}` : text;
  }

  #keptContents(): Buffer {
    const ring = this.#ring;
    if (ring === undefined || this.#keptBytes === 0) return Buffer.alloc(0);
    const end = this.#start + this.#keptBytes;
    if (end <= this.#maxBytes) return ring.subarray(this.#start, end);
    return Buffer.concat([ring.subarray(this.#start), ring.subarray(0, end - this.#maxBytes)]);
  }
}

/** How many UTF-8 continuation bytes open the buffer: the rest of a character whose start was cut. */
function continuationBytesAt(bytes: Buffer): number {
  let count = 0;
  while (count < 3 && count < bytes.length && ((bytes[count] ?? 0) & 0xc0) === 0x80) count += 1;
  return count;
}
