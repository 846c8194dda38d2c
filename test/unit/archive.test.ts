import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { chmod, link, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import type { HeaderData } from 'tar';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ClusterRunnerError } from '../../shared/errors.ts';
import { createSafeExtractor, LoopBudget, packDirectory, readSmallArchiveFile, walkArchiveEntries, type ExtractLimits, type ExtractSummary } from '../../shared/archive.ts';
import { gzipPieces, MiB, tarEntry, tarGz, zeros } from '../support/tar-craft.ts';

const roomyLimits: ExtractLimits = { maxBytes: 100 * MiB, maxEntries: 10_000 };

let workDir: string;
let dest: string;

beforeEach(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'cr-archive-'));
  dest = path.join(workDir, 'dest');
});

afterEach(async () => {
  await rm(workDir, { recursive: true, force: true });
});

// ---- crafting archives ------------------------------------------------------------------------------------

function chunksOf(buffer: Buffer, size = 64 * 1024): Buffer[] {
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < buffer.length; offset += size) {
    chunks.push(buffer.subarray(offset, offset + size));
  }
  return chunks;
}

// ---- driving the extractor --------------------------------------------------------------------------------

async function extract(archive: Buffer | Readable, limits: ExtractLimits = roomyLimits): Promise<ExtractSummary> {
  const { input, done } = createSafeExtractor(dest, limits);
  await pipeline(Buffer.isBuffer(archive) ? Readable.from(chunksOf(archive)) : archive, input);
  return done;
}

async function expectRefusal(promise: Promise<unknown>, code: string, status: number, messagePart?: string): Promise<ClusterRunnerError> {
  const error = await promise.then(
    () => {
      throw new Error('expected the archive to be refused');
    },
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(ClusterRunnerError);
  const refusal = error as ClusterRunnerError;
  expect({ code: refusal.code, status: refusal.status }).toEqual({ code, status });
  if (messagePart !== undefined) {
    expect(refusal.message).toContain(messagePart);
  }
  return refusal;
}

/**
 * Every path under dir: folders with a trailing slash, links as links, files as their size and SHA-256
 * (comparing megabytes of Buffers with toEqual takes seconds).
 */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const result = new Map<string, string>();
  const visit = async (relative: string): Promise<void> => {
    for (const name of (await readdir(path.join(dir, relative))).sort()) {
      const child = relative === '' ? name : `${relative}/${name}`;
      const info = await lstat(path.join(dir, child));
      if (info.isSymbolicLink()) {
        result.set(child, 'symlink');
      } else if (info.isDirectory()) {
        result.set(`${child}/`, 'dir');
        await visit(child);
      } else {
        const content = await readFile(path.join(dir, child));
        result.set(child, `${content.length}:${createHash('sha256').update(content).digest('hex')}`);
      }
    }
  };
  await visit('');
  return result;
}

function fileDigest(content: string | Buffer): string {
  return `${Buffer.byteLength(content)}:${createHash('sha256').update(content).digest('hex')}`;
}

async function totalFileBytes(dir: string): Promise<number> {
  let total = 0;
  for (const value of (await snapshot(dir).catch(() => new Map<string, string>())).values()) {
    const size = /^(\d+):/.exec(value)?.[1];
    total += size === undefined ? 0 : Number(size);
  }
  return total;
}

// ---- tests ------------------------------------------------------------------------------------------------

describe('packDirectory + createSafeExtractor', () => {
  it('round-trips a nested folder with binary content, long and unicode names, modes and empty parts', async () => {
    const src = path.join(workDir, 'src');
    const longName = `${'n'.repeat(120)}/${'m'.repeat(150)}.bin`;
    await mkdir(path.join(src, 'deep/er/still/deeper'), { recursive: true });
    await mkdir(path.join(src, 'empty-folder'));
    await mkdir(path.join(src, path.dirname(longName)), { recursive: true });
    await writeFile(path.join(src, 'clusterrunner_exit_code'), '0\n');
    await writeFile(path.join(src, 'empty-file'), '');
    await writeFile(path.join(src, 'deep/er/still/deeper/big.bin'), randomBytes(3 * MiB + 17));
    await writeFile(path.join(src, 'deep/small.bin'), randomBytes(511));
    await writeFile(path.join(src, 'deep/block.bin'), randomBytes(512));
    await writeFile(path.join(src, longName), randomBytes(1000));
    await writeFile(path.join(src, 'ünïcødé ✓.txt'), 'text');
    await writeFile(path.join(src, 'run.sh'), '#!/bin/sh\n');
    await chmod(path.join(src, 'run.sh'), 0o755);

    const summary = await extract(packDirectory(src));

    const expected = await snapshot(src);
    expect(await snapshot(dest)).toEqual(expected);
    const fileCount = [...expected.values()].filter((value) => /^\d+:/.test(value)).length;
    expect(summary).toEqual({ files: fileCount, bytes: await totalFileBytes(src) });
    expect((await stat(path.join(dest, 'run.sh'))).mode & 0o111).not.toBe(0);
    expect((await stat(path.join(dest, 'deep/small.bin'))).mode & 0o111).toBe(0);
  });

  it('packs without a leading folder, readable by the system tar', async () => {
    const src = path.join(workDir, 'src');
    await mkdir(path.join(src, 'sub'), { recursive: true });
    await writeFile(path.join(src, 'sub/file.txt'), 'hello');
    const archive = path.join(workDir, 'out.tar.gz');
    await pipeline(packDirectory(src), createWriteStream(archive));
    expect(execFileSync('tar', ['-tzf', archive], { encoding: 'utf8' }).split('\n').filter(Boolean)).toEqual(['sub/', 'sub/file.txt']);
  });

  it('skips symbolic links, FIFOs and sockets, and sends hard links as full copies', async () => {
    const src = path.join(workDir, 'src');
    const outside = path.join(workDir, 'outside');
    await mkdir(path.join(src, 'sub'), { recursive: true });
    await mkdir(outside);
    await writeFile(path.join(outside, 'secret'), 'do not send');
    await writeFile(path.join(src, 'sub/original'), 'shared bytes');
    await link(path.join(src, 'sub/original'), path.join(src, 'hardlink'));
    await symlink(path.join(outside, 'secret'), path.join(src, 'file-link'));
    await symlink(outside, path.join(src, 'folder-link'));
    await symlink('/nonexistent/target', path.join(src, 'dangling'));
    execFileSync('mkfifo', [path.join(src, 'fifo')]);

    await extract(packDirectory(src));

    expect([...(await snapshot(dest)).entries()]).toEqual([
      ['hardlink', fileDigest('shared bytes')],
      ['sub/', 'dir'],
      ['sub/original', fileDigest('shared bytes')],
    ]);
  });

  it('packs an empty folder to a valid empty archive that unpacks to nothing', async () => {
    const src = path.join(workDir, 'src');
    await mkdir(src);
    const archive = path.join(workDir, 'empty.tar.gz');
    await pipeline(packDirectory(src), createWriteStream(archive));
    expect(execFileSync('tar', ['-tzf', archive], { encoding: 'utf8' })).toBe('');

    expect(await extract(await readFile(archive))).toEqual({ files: 0, bytes: 0 });
    expect(await readdir(dest)).toEqual([]);
  });

  it('fails the stream when the folder does not exist', async () => {
    await expect(pipeline(packDirectory(path.join(workDir, 'missing')), new Writable({ write: (_c, _e, cb) => cb() }))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('unpacks what the system tar makes, including its "./" entries', async () => {
    const src = path.join(workDir, 'src');
    await mkdir(path.join(src, 'a/b'), { recursive: true });
    await writeFile(path.join(src, 'a/b/c.txt'), 'c');
    const archive = path.join(workDir, 'system.tar.gz');
    execFileSync('tar', ['-czf', archive, '-C', src, '.']);

    expect(await extract(await readFile(archive))).toEqual({ files: 1, bytes: 1 });
    expect(await snapshot(dest)).toEqual(await snapshot(src));
  });
});

describe('createSafeExtractor refuses', () => {
  it.each([
    ['a parent-folder path', '../x'],
    ['a parent-folder path in the middle', 'a/../../x'],
    ['an absolute path', '/abs/x'],
    ['a drive letter', 'C:/x'],
    ['a backslash', 'a\\..\\x'],
  ])('%s (%s)', async (_label, entryPath) => {
    await mkdir(dest, { recursive: true });
    const archive = tarGz(tarEntry({ path: 'fine.txt' }, Buffer.from('ok')), tarEntry({ path: entryPath }, Buffer.from('evil')));
    await expectRefusal(extract(archive), 'UNSAFE_ARCHIVE', 400, JSON.stringify(entryPath));
    expect(await readdir(workDir)).toEqual(['dest']);
    await expect(stat('/abs/x')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a symbolic link made by the system tar', async () => {
    const src = path.join(workDir, 'src');
    await mkdir(src);
    await symlink('/etc/passwd', path.join(src, 'link'));
    const archive = path.join(workDir, 'link.tar.gz');
    execFileSync('tar', ['-czf', archive, '-C', src, 'link']);

    await expectRefusal(extract(await readFile(archive)), 'UNSAFE_ARCHIVE', 400, '"link" is a symbolic link');
    expect(await snapshot(dest)).toEqual(new Map());
  });

  it('a symbolic link followed by a file written through it', async () => {
    const outside = path.join(workDir, 'outside');
    await mkdir(outside);
    const archive = tarGz(
      tarEntry({ path: 'escape', type: 'SymbolicLink', linkpath: outside, size: 0 }),
      tarEntry({ path: 'escape/pwned' }, Buffer.from('x')),
    );
    await expectRefusal(extract(archive), 'UNSAFE_ARCHIVE', 400, 'symbolic link');
    expect(await readdir(outside)).toEqual([]);
  });

  it('a hard link', async () => {
    const archive = tarGz(tarEntry({ path: 'target' }, Buffer.from('t')), tarEntry({ path: 'hard', type: 'Link', linkpath: '/etc/passwd', size: 0 }));
    await expectRefusal(extract(archive), 'UNSAFE_ARCHIVE', 400, '"hard" is a hard link');
  });

  it.each([
    ['a character device', { path: 'null', type: 'CharacterDevice', devmaj: 1, devmin: 3, size: 0 }],
    ['a block device', { path: 'sda', type: 'BlockDevice', devmaj: 8, devmin: 0, size: 0 }],
    ['a FIFO', { path: 'pipe', type: 'FIFO', size: 0 }],
    ['an entry type tar only skips', { path: 'sparse', type: 'SparseFile', size: 0 }],
  ] satisfies [string, HeaderData][])('%s', async (_label, header) => {
    await expectRefusal(extract(tarGz(tarEntry(header))), 'UNSAFE_ARCHIVE', 400, JSON.stringify(header.path));
    expect(await snapshot(dest)).toEqual(new Map());
  });

  it('more entries than maxEntries (2000 files against 1000)', async () => {
    const entries = Array.from({ length: 2000 }, (_, index) => tarEntry({ path: `f/${index}.txt` }, Buffer.from(String(index))));
    await expectRefusal(extract(tarGz(...entries), { maxBytes: 100 * MiB, maxEntries: 1000 }), 'ARCHIVE_TOO_LARGE', 413, '1000');
    expect((await readdir(path.join(dest, 'f'))).length).toBeLessThanOrEqual(1000);
  });

  it('a gzip bomb: 200 MB of zeros against maxBytes of 10 MB, without writing them', async () => {
    const size = 200 * MiB;
    const archive = await gzipPieces(function* () {
      yield tarEntry({ path: 'zeros', size });
      yield* zeros(size);
      yield Buffer.alloc(1024);
    });
    expect(archive.length).toBeLessThan(MiB);
    await expectRefusal(extract(archive, { maxBytes: 10 * MiB, maxEntries: 100 }), 'ARCHIVE_TOO_LARGE', 413, '"zeros"');
    expect(await totalFileBytes(dest)).toBeLessThanOrEqual(10 * MiB);
  });

  it('many files that together pass maxBytes, having written no more than the limit', async () => {
    const archive = await gzipPieces(function* () {
      for (let index = 0; index < 30; index += 1) {
        yield tarEntry({ path: `part-${index}`, size: MiB });
        yield* zeros(MiB);
      }
      yield Buffer.alloc(1024);
    });
    await expectRefusal(extract(archive, { maxBytes: 10 * MiB, maxEntries: 100 }), 'ARCHIVE_TOO_LARGE', 413);
    expect(await totalFileBytes(dest)).toBeLessThanOrEqual(10 * MiB);
  });

  it('endless zeros after the end of the archive (bounds the decompression work)', async () => {
    const archive = await gzipPieces(function* () {
      yield tarEntry({ path: 'small' }, Buffer.from('x'));
      yield* zeros(200 * MiB);
    });
    await expectRefusal(extract(archive, { maxBytes: 10 * MiB, maxEntries: 10 }), 'ARCHIVE_TOO_LARGE', 413);
  });

  it('accepts content of exactly maxBytes', async () => {
    const archive = tarGz(tarEntry({ path: 'a' }, randomBytes(600)), tarEntry({ path: 'b' }, randomBytes(424)));
    expect(await extract(archive, { maxBytes: 1024, maxEntries: 2 })).toEqual({ files: 2, bytes: 1024 });
  });

  it('paths deeper than maxDepth', async () => {
    const deep = `${Array.from({ length: 40 }, () => 'd').join('/')}/file`;
    await expectRefusal(extract(tarGz(tarEntry({ path: deep }, Buffer.from('x')))), 'UNSAFE_ARCHIVE', 400, 'deeper than 32');
    const archive = tarGz(tarEntry({ path: 'a/b/c/d' }, Buffer.from('x')));
    await expectRefusal(extract(archive, { ...roomyLimits, maxDepth: 3 }), 'UNSAFE_ARCHIVE', 400, 'deeper than 3');
  });

  it('the same file twice', async () => {
    const archive = tarGz(tarEntry({ path: 'twice' }, Buffer.from('one')), tarEntry({ path: 'twice' }, Buffer.from('two')));
    await expectRefusal(extract(archive), 'UNSAFE_ARCHIVE', 400, '"twice"');
    expect(await readFile(path.join(dest, 'twice'), 'utf8')).toBe('one');
  });

  it('a folder where a file already is', async () => {
    const archive = tarGz(tarEntry({ path: 'thing' }, Buffer.from('file')), tarEntry({ path: 'thing/inside' }, Buffer.from('x')));
    await expectRefusal(extract(archive), 'UNSAFE_ARCHIVE', 400, '"thing/inside"');
  });

  it('to write through a symbolic link already inside destDir', async () => {
    const outside = path.join(workDir, 'outside');
    await mkdir(outside);
    await mkdir(dest);
    await symlink(outside, path.join(dest, 'evil'));
    await symlink(path.join(outside, 'target'), path.join(dest, 'dangling'));

    await expectRefusal(extract(tarGz(tarEntry({ path: 'evil/x' }, Buffer.from('x')))), 'UNSAFE_ARCHIVE', 400, '"evil/x"');
    await expectRefusal(extract(tarGz(tarEntry({ path: 'evil/' , type: 'Directory', size: 0 }))), 'UNSAFE_ARCHIVE', 400);
    await expectRefusal(extract(tarGz(tarEntry({ path: 'dangling' }, Buffer.from('x')))), 'UNSAFE_ARCHIVE', 400, '"dangling"');
    expect(await readdir(outside)).toEqual([]);
  });

  it.each([
    ['random bytes', () => randomBytes(4096)],
    ['an empty upload', () => Buffer.alloc(0)],
    ['a plain tar without gzip', () => Buffer.concat([tarEntry({ path: 'a' }, Buffer.from('a')), Buffer.alloc(1024)])],
    ['gzip of something that is not tar', () => gzipSync(randomBytes(4096))],
    ['gzip cut short', () => {
      const whole = tarGz(tarEntry({ path: 'big' }, randomBytes(200_000)));
      return whole.subarray(0, whole.length / 2);
    }],
    ['a tar cut inside an entry', () => gzipSync(tarEntry({ path: 'big' }, randomBytes(10_000)).subarray(0, 4096))],
    ['a header with a wrong checksum', () => {
      const entry = tarEntry({ path: 'a' }, Buffer.from('a'));
      entry[0] = 'b'.charCodeAt(0);
      return tarGz(entry);
    }],
    ['a gzip inside the gzip', () => gzipSync(tarGz(tarEntry({ path: 'inner' }, Buffer.from('x'))))],
    ['an oversized pax record', () => {
      const record = `${'x'.repeat(20)} comment=${'c'.repeat(20_000)}\n`;
      return tarGz(tarEntry({ path: 'PaxHeader/a', type: 'ExtendedHeader' }, Buffer.from(record)), tarEntry({ path: 'a' }, Buffer.from('a')));
    }],
  ])('a corrupt archive: %s', async (_label, makeArchive) => {
    await expectRefusal(extract(makeArchive()), 'UNSAFE_ARCHIVE', 400);
  });
});

describe('createSafeExtractor after a refusal', () => {
  it('stops writing and settles while the writer keeps writing, then lets it finish', async () => {
    const { input, done } = createSafeExtractor(dest, { maxBytes: MiB, maxEntries: 100 });
    const refused = expectRefusal(done, 'UNSAFE_ARCHIVE', 400, '"../escape"');
    input.write(tarGz(tarEntry({ path: '../escape' }, Buffer.from('x'))));
    await refused;
    // 50 MB more: all of it is swallowed, none of it written, and every write completes.
    for (const chunk of zeros(50 * MiB)) {
      if (!input.write(chunk)) {
        await once(input, 'drain');
      }
    }
    input.end();
    await once(input, 'finish');
    expect(await totalFileBytes(dest)).toBe(0);
  });

  it('settles when the writer stops half way by destroying the input', async () => {
    const { input, done } = createSafeExtractor(dest, roomyLimits);
    const whole = tarGz(tarEntry({ path: 'big' }, randomBytes(200_000)));
    input.write(whole.subarray(0, 1000));
    input.destroy();
    await expectRefusal(done, 'ARCHIVE_INCOMPLETE', 400);
  });

  it('settles when the writer ends before the archive does', async () => {
    const { input, done } = createSafeExtractor(dest, roomyLimits);
    const whole = tarGz(tarEntry({ path: 'big' }, randomBytes(200_000)));
    input.end(whole.subarray(0, 1000));
    await expectRefusal(done, 'UNSAFE_ARCHIVE', 400);
  });
});

describe('walkArchiveEntries', () => {
  it('given a budget, reads a big folder with synchronous calls but lets the event loop turn every 64 of them', async () => {
    await mkdir(path.join(workDir, 'big', 'sub'), { recursive: true });
    for (let index = 0; index < 1000; index++) await writeFile(path.join(workDir, 'big', 'sub', `f${index}`), 'x');
    let turns = 0;
    let counting = true;
    const count = () => {
      turns++;
      if (counting) setImmediate(count);
    };
    setImmediate(count);

    const seen: string[] = [];
    for await (const entry of walkArchiveEntries(path.join(workDir, 'big'), '', new LoopBudget())) seen.push(entry.path);
    counting = false;

    expect(seen).toHaveLength(1001);
    expect(seen[0]).toBe('sub');
    // Two readdirs and 1001 lstats: at least 15 turns; with no budget the walk would never yield to the loop.
    expect(turns).toBeGreaterThanOrEqual(15);
  });
});

describe('readSmallArchiveFile', () => {
  it('reads a small regular file, and gives null for a FIFO (without waiting on it) or a file past the limit', async () => {
    await mkdir(workDir, { recursive: true });
    await writeFile(path.join(workDir, 'small.txt'), 'hello');
    await writeFile(path.join(workDir, 'big.bin'), randomBytes(2000));
    execFileSync('mkfifo', [path.join(workDir, 'pipe')]);

    expect(readSmallArchiveFile(path.join(workDir, 'small.txt'), 1000)!.toString()).toBe('hello');
    expect(readSmallArchiveFile(path.join(workDir, 'big.bin'), 1000)).toBeNull();
    expect(readSmallArchiveFile(path.join(workDir, 'pipe'), 1000)).toBeNull();
    await symlink(path.join(workDir, 'small.txt'), path.join(workDir, 'link'));
    expect(() => readSmallArchiveFile(path.join(workDir, 'link'), 1000)).toThrow(/ELOOP/);
  });
});
