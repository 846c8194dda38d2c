import { MAX_OUTPUT_CHUNK_CHARS } from '../shared/protocol.ts';

/** How much of a running atom's latest output is kept to send again; older output lost in transit is reported. */
export const RESEND_WINDOW_BYTES = 1024 * 1024;

/**
 * The console output a running atom has sent, counted in bytes, with its latest part kept. Output sent
 * into a connection that died, or to a master that died before storing it, is gone from the master; when
 * the master says how much it holds (on registration), the rest is sent again from here.
 */
export class OutputRecord {
  readonly ids: { lease_id: string; build_id: number; subjob_id: number; atom_id: number };
  /** The atom ended while the master was away: the record goes once the master has been told the rest. */
  isDone = false;
  #sentBytes = 0;
  readonly #window: { text: string; bytes: number }[] = [];
  #windowBytes = 0;

  constructor(ids: OutputRecord['ids']) {
    this.ids = ids;
  }

  get sentBytes(): number {
    return this.#sentBytes;
  }

  add(text: string): void {
    const bytes = Buffer.byteLength(text);
    this.#sentBytes += bytes;
    this.#window.push({ text, bytes });
    this.#windowBytes += bytes;
    while (this.#windowBytes - this.#window[0]!.bytes >= RESEND_WINDOW_BYTES) this.#windowBytes -= this.#window.shift()!.bytes;
  }

  /** What to send again after the first `heldBytes`: a notice of any part no longer kept, then the rest. */
  since(heldBytes: number): string[] {
    if (heldBytes >= this.#sentBytes) return [];
    const parts: string[] = [];
    let offset = this.#sentBytes - this.#windowBytes;
    if (heldBytes < offset) parts.push(`\n[ClusterRunner: ${offset - heldBytes} bytes of output were lost while the master was unreachable]\n`);
    for (const piece of this.#window) {
      const end = offset + piece.bytes;
      if (end > heldBytes) {
        // The master stores whole messages, so a cut inside one only happens past its console limit.
        parts.push(heldBytes > offset ? Buffer.from(piece.text).subarray(heldBytes - offset).toString() : piece.text);
      }
      offset = end;
    }
    return parts.flatMap((part) => splitChunks(part));
  }
}

function splitChunks(text: string): string[] {
  const chunks: string[] = [];
  for (let at = 0; at < text.length; at += MAX_OUTPUT_CHUNK_CHARS) chunks.push(text.slice(at, at + MAX_OUTPUT_CHUNK_CHARS));
  return chunks;
}

export function outputKey(leaseId: string, atomId: number): string {
  return `${leaseId}/${atomId}`;
}

