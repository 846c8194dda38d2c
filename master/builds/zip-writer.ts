/**
 * A streaming zip writer for the build archive. yazl (used before) rescans its whole entry list for every
 * entry it writes and keeps a large object per entry: a 100,000-atom build (500,000 entries) took the best
 * part of an hour and over 500 MB. Here each entry costs one compact central-directory record (~100 bytes)
 * and constant time. ZIP64 records are written when counts, sizes or offsets need them.
 */
import { promisify } from 'node:util';
import { crc32, deflateRaw } from 'node:zlib';
import type { FileHandle } from 'node:fs/promises';
import { zeroedBuffer } from '../../shared/archive.ts';

const deflateRawAsync = promisify(deflateRaw);

/** Smaller files gain nothing from deflate; bigger ones than this are stored, streamed in chunks. */
const MIN_DEFLATE_BYTES = 1024;
const MAX_DEFLATE_BYTES = 8 * 1024 * 1024;
const READ_CHUNK_BYTES = 64 * 1024;

const FLAG_DATA_DESCRIPTOR = 0x0008;
const FLAG_UTF8 = 0x0800;
const METHOD_STORED = 0;
const METHOD_DEFLATED = 8;
const VERSION_ZIP64 = 45;
const VERSION_MADE_BY_UNIX = (3 << 8) | VERSION_ZIP64;
const MAX_32 = 0xffffffff;
const MAX_16 = 0xffff;

export type ZipSource =
  | { readonly type: 'directory'; readonly path: string; readonly mtime: Date }
  | { readonly type: 'content'; readonly path: string; readonly mtime: Date; readonly content: Buffer }
  | { readonly type: 'file'; readonly path: string; readonly mtime: Date; readonly isExecutable: boolean; readonly open: () => Promise<FileHandle> };

/** The bytes of a zip holding the entries, in order. A file that shrinks while read fails the stream. */
export async function* generateZip(entries: AsyncIterable<ZipSource>): AsyncGenerator<Buffer> {
  const central = new RecordBuffer();
  let offset = 0;
  let count = 0;
  for await (const entry of entries) {
    const name = Buffer.from(entry.type === 'directory' ? `${entry.path}/` : entry.path);
    const time = dosDateTime(entry.mtime);
    const headerOffset = offset;
    let record: CentralRecord;
    if (entry.type === 'file') {
      const header = localHeader({ name, time, flags: FLAG_DATA_DESCRIPTOR, method: 0, crc: 0, compressed: 0, size: 0, zip64Sizes: true });
      // The method is only known once the size is: patch it in before the header leaves.
      const handle = await entry.open();
      try {
        const size = (await handle.stat()).size;
        const method = size >= MIN_DEFLATE_BYTES && size <= MAX_DEFLATE_BYTES ? METHOD_DEFLATED : METHOD_STORED;
        header.writeUInt16LE(method, 8);
        yield header;
        offset += header.length;
        let crc = 0;
        let compressed = 0;
        if (method === METHOD_DEFLATED) {
          const { buffer, bytesRead } = await handle.read(Buffer.allocUnsafe(size), 0, size, 0);
          if (bytesRead < size) throw shrank(entry.path);
          crc = crc32(buffer);
          const data = await deflateRawAsync(buffer);
          compressed = data.length;
          yield data;
        } else {
          for (let position = 0; position < size;) {
            const length = Math.min(READ_CHUNK_BYTES, size - position);
            const { buffer, bytesRead } = await handle.read(Buffer.allocUnsafe(length), 0, length, position);
            if (bytesRead === 0) throw shrank(entry.path);
            const chunk = bytesRead === length ? buffer : buffer.subarray(0, bytesRead);
            crc = crc32(chunk, crc);
            position += bytesRead;
            yield chunk;
          }
          compressed = size;
        }
        offset += compressed;
        const descriptor = zeroedBuffer(24);
        descriptor.writeUInt32LE(0x08074b50, 0);
        descriptor.writeUInt32LE(crc, 4);
        descriptor.writeBigUInt64LE(BigInt(compressed), 8);
        descriptor.writeBigUInt64LE(BigInt(size), 16);
        yield descriptor;
        offset += descriptor.length;
        const mode = entry.isExecutable ? 0o100755 : 0o100644;
        record = { name, time, flags: FLAG_DATA_DESCRIPTOR, method, crc, compressed, size, headerOffset, attributes: mode << 16 };
      } finally {
        await handle.close();
      }
    } else {
      const content = entry.type === 'content' ? entry.content : Buffer.alloc(0);
      const crc = crc32(content);
      const data = content.length >= MIN_DEFLATE_BYTES ? await deflateRawAsync(content) : content;
      const method = data === content ? METHOD_STORED : METHOD_DEFLATED;
      const header = localHeader({ name, time, flags: 0, method, crc, compressed: data.length, size: content.length, zip64Sizes: false });
      yield header;
      if (data.length > 0) yield data;
      offset += header.length + data.length;
      // Directories carry the MS-DOS directory bit as well as their Unix mode, as zip tools expect.
      const attributes = entry.type === 'directory' ? ((0o40755 << 16) | 0x10) : (0o100644 << 16);
      record = { name, time, flags: 0, method, crc, compressed: data.length, size: content.length, headerOffset, attributes };
    }
    central.add(centralRecord(record));
    count++;
  }
  const centralOffset = offset;
  let centralSize = 0;
  for (const block of central.blocks()) {
    centralSize += block.length;
    yield block;
  }
  yield endRecords(count, centralSize, centralOffset);
}

/** The central directory, packed into 1 MiB blocks: no object per entry while the archive is written. */
class RecordBuffer {
  readonly #full: Buffer[] = [];
  #current = Buffer.allocUnsafe(1024 * 1024);
  #used = 0;

  add(record: Buffer): void {
    if (this.#used + record.length > this.#current.length) {
      this.#full.push(this.#current.subarray(0, this.#used));
      this.#current = Buffer.allocUnsafe(Math.max(1024 * 1024, record.length));
      this.#used = 0;
    }
    record.copy(this.#current, this.#used);
    this.#used += record.length;
  }

  blocks(): Buffer[] {
    return [...this.#full, this.#current.subarray(0, this.#used)];
  }
}

interface CentralRecord {
  readonly name: Buffer;
  readonly time: { time: number; date: number };
  readonly flags: number;
  readonly method: number;
  readonly crc: number;
  readonly compressed: number;
  readonly size: number;
  readonly headerOffset: number;
  readonly attributes: number;
}

function localHeader(options: {
  name: Buffer; time: { time: number; date: number }; flags: number; method: number; crc: number; compressed: number; size: number;
  zip64Sizes: boolean;
}): Buffer {
  // A streamed file's sizes come after it; the ZIP64 extra says its descriptor holds 8-byte sizes.
  const extra = options.zip64Sizes ? Buffer.alloc(20) : Buffer.alloc(0);
  if (options.zip64Sizes) {
    extra.writeUInt16LE(0x0001, 0);
    extra.writeUInt16LE(16, 2);
  }
  const header = zeroedBuffer(30 + options.name.length + extra.length);
  header.writeUInt32LE(0x04034b50, 0);
  header.writeUInt16LE(VERSION_ZIP64, 4);
  header.writeUInt16LE(options.flags | FLAG_UTF8, 6);
  header.writeUInt16LE(options.method, 8);
  header.writeUInt16LE(options.time.time, 10);
  header.writeUInt16LE(options.time.date, 12);
  header.writeUInt32LE(options.crc, 14);
  header.writeUInt32LE(options.zip64Sizes ? MAX_32 : options.compressed, 18);
  header.writeUInt32LE(options.zip64Sizes ? MAX_32 : options.size, 22);
  header.writeUInt16LE(options.name.length, 26);
  header.writeUInt16LE(extra.length, 28);
  options.name.copy(header, 30);
  extra.copy(header, 30 + options.name.length);
  return header;
}

function centralRecord(record: CentralRecord): Buffer {
  const needs64 = [record.size, record.compressed, record.headerOffset].map((value) => value >= MAX_32);
  const extraValues = [record.size, record.compressed, record.headerOffset].filter((_, index) => needs64[index]);
  const extra = Buffer.alloc(extraValues.length === 0 ? 0 : 4 + 8 * extraValues.length);
  if (extraValues.length > 0) {
    extra.writeUInt16LE(0x0001, 0);
    extra.writeUInt16LE(8 * extraValues.length, 2);
    extraValues.forEach((value, index) => extra.writeBigUInt64LE(BigInt(value), 4 + 8 * index));
  }
  const out = zeroedBuffer(46 + record.name.length + extra.length);
  out.writeUInt32LE(0x02014b50, 0);
  out.writeUInt16LE(VERSION_MADE_BY_UNIX, 4);
  out.writeUInt16LE(VERSION_ZIP64, 6);
  out.writeUInt16LE(record.flags | FLAG_UTF8, 8);
  out.writeUInt16LE(record.method, 10);
  out.writeUInt16LE(record.time.time, 12);
  out.writeUInt16LE(record.time.date, 14);
  out.writeUInt32LE(record.crc, 16);
  out.writeUInt32LE(needs64[1] ? MAX_32 : record.compressed, 20);
  out.writeUInt32LE(needs64[0] ? MAX_32 : record.size, 24);
  out.writeUInt16LE(record.name.length, 28);
  out.writeUInt16LE(extra.length, 30);
  // Comment length, disk number and internal attributes stay 0.
  out.writeUInt32LE(record.attributes >>> 0, 38);
  out.writeUInt32LE(needs64[2] ? MAX_32 : record.headerOffset, 42);
  record.name.copy(out, 46);
  extra.copy(out, 46 + record.name.length);
  return out;
}

function endRecords(count: number, centralSize: number, centralOffset: number): Buffer {
  const needs64 = count >= MAX_16 || centralSize >= MAX_32 || centralOffset >= MAX_32;
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(needs64 ? MAX_16 : count, 8);
  end.writeUInt16LE(needs64 ? MAX_16 : count, 10);
  end.writeUInt32LE(needs64 ? MAX_32 : centralSize, 12);
  end.writeUInt32LE(needs64 ? MAX_32 : centralOffset, 16);
  if (!needs64) return end;
  const end64 = Buffer.alloc(56);
  end64.writeUInt32LE(0x06064b50, 0);
  end64.writeBigUInt64LE(44n, 4);
  end64.writeUInt16LE(VERSION_MADE_BY_UNIX, 12);
  end64.writeUInt16LE(VERSION_ZIP64, 14);
  end64.writeBigUInt64LE(BigInt(count), 24);
  end64.writeBigUInt64LE(BigInt(count), 32);
  end64.writeBigUInt64LE(BigInt(centralSize), 40);
  end64.writeBigUInt64LE(BigInt(centralOffset), 48);
  const locator = Buffer.alloc(20);
  locator.writeUInt32LE(0x07064b50, 0);
  locator.writeBigUInt64LE(BigInt(centralOffset + centralSize), 8);
  locator.writeUInt32LE(1, 16);
  return Buffer.concat([end64, locator, end]);
}

function dosDateTime(date: Date): { time: number; date: number } {
  const year = Math.min(Math.max(date.getFullYear(), 1980), 2107);
  return {
    time: (date.getHours() << 11) | (date.getMinutes() << 5) | (date.getSeconds() >> 1),
    date: ((year - 1980) << 9) | ((date.getMonth() + 1) << 5) | date.getDate(),
  };
}

function shrank(path: string): Error {
  return new Error(`${path} shrank while it was being packed`);
}
