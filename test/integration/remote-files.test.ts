/**
 * SPEC §3 remote_files: downloads from a real HTTP server on the loopback network, including servers that
 * misbehave (too big, too slow, redirecting somewhere they should not).
 */
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ClusterRunnerError } from '../../shared/errors.ts';
import { downloadRemoteFiles, validateRemoteFiles } from '../../shared/remote-files.ts';
import type { RemoteFileLimits } from '../../shared/remote-files.ts';

type Route = (request: IncomingMessage, response: ServerResponse) => void;

const servers: Server[] = [];
const dirs: string[] = [];

afterEach(async () => {
  // Stalling routes never answer: drop their connections or close() would wait for ever.
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

// Not support/cluster.ts's tempDir: importing that module loads a whole master, which this file does not need.
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

const LIMITS: RemoteFileLimits = { maxBytes: 1024 * 1024, timeoutMs: 10_000, maxFiles: 100 };

/** A server on 127.0.0.1, port 0, answering by path; unknown paths get a 404. Resolves to its base URL. */
async function serve(routes: Record<string, Route>): Promise<string> {
  const server = createServer((request, response) => {
    const route = routes[new URL(request.url ?? '/', 'http://x').pathname];
    if (route === undefined) {
      response.writeHead(404).end('no such file');
      return;
    }
    route(request, response);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function body(content: Buffer | string): Route {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/octet-stream' }).end(content);
  };
}

function redirect(location: string, status = 302): Route {
  return (_request, response) => {
    response.writeHead(status, { location }).end();
  };
}

/** Sends headers (and optionally some bytes), then never finishes. */
function stall(firstBytes?: string, onRequest?: () => void): Route {
  return (_request, response) => {
    onRequest?.();
    if (firstBytes === undefined) return;
    response.writeHead(200, { 'content-length': '1000' });
    response.write(firstBytes);
  };
}

async function failureOf(promise: Promise<unknown>): Promise<ClusterRunnerError> {
  const error = await promise.then(
    () => {
      throw new Error('expected the promise to reject');
    },
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(ClusterRunnerError);
  expect((error as ClusterRunnerError).status).toBe(400);
  return error as ClusterRunnerError;
}

/** Every name in dir, temporary files included. */
function filesIn(dir: string): string[] {
  return readdirSync(dir).sort();
}

describe('downloadRemoteFiles', () => {
  it('downloads each file with its exact bytes and leaves nothing else behind', async () => {
    const binary = randomBytes(300 * 1024);
    const base = await serve({ '/data.bin': body(binary), '/notes.txt': body('hello\n') });
    const dir = tempDir('cr-remote-');
    await downloadRemoteFiles({ 'data.bin': `${base}/data.bin`, 'notes.txt': `${base}/notes.txt` }, dir, LIMITS);
    expect(filesIn(dir)).toEqual(['data.bin', 'notes.txt']);
    expect(readFileSync(join(dir, 'data.bin')).equals(binary)).toBe(true);
    expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('hello\n');
  });

  it('names the file and the HTTP status of a failed download', async () => {
    const base = await serve({});
    const dir = tempDir('cr-remote-');
    const error = await failureOf(downloadRemoteFiles({ 'missing.txt': `${base}/missing.txt` }, dir, LIMITS));
    expect(error.code).toBe('REMOTE_FILE_FAILED');
    expect(error.message).toContain('"missing.txt"');
    expect(error.message).toContain('HTTP 404');
    expect(filesIn(dir)).toEqual([]);
  });

  it('refuses a Content-Length over maxBytes before reading the body', async () => {
    // The body never comes: only refusing on the header can end this before the time limit.
    const base = await serve({
      '/big': (_request, response) => {
        response.writeHead(200, { 'content-length': String(LIMITS.maxBytes + 1) });
        response.flushHeaders();
      },
    });
    const dir = tempDir('cr-remote-');
    const error = await failureOf(downloadRemoteFiles({ 'big.bin': `${base}/big` }, dir, LIMITS));
    expect(error.message).toContain('"big.bin"');
    // The size refusal, not the time limit, ended it: only the header was there to refuse.
    expect(error.message).toMatch(/larger than 1048576 bytes \(Content-Length 1048577\)/);
    expect(filesIn(dir)).toEqual([]);
  });

  it('counts the bytes of a chunked body and refuses once they pass maxBytes, leaving the old file alone', async () => {
    const base = await serve({
      '/chunked': (_request, response) => {
        // No Content-Length: Node sends the body chunked, so only counting can catch it.
        response.writeHead(200);
        for (let i = 0; i < 5; i += 1) response.write(Buffer.alloc(1000, i));
        response.end();
      },
    });
    const dir = tempDir('cr-remote-');
    writeFileSync(join(dir, 'big.bin'), 'old');
    const error = await failureOf(downloadRemoteFiles({ 'big.bin': `${base}/chunked` }, dir, { ...LIMITS, maxBytes: 4096 }));
    expect(error.message).toContain('"big.bin"');
    expect(error.message).toContain('larger than 4096 bytes');
    expect(filesIn(dir)).toEqual(['big.bin']);
    expect(readFileSync(join(dir, 'big.bin'), 'utf8')).toBe('old');
  });

  it('accepts a file of exactly maxBytes', async () => {
    const content = randomBytes(4096);
    const base = await serve({ '/exact': body(content) });
    const dir = tempDir('cr-remote-');
    await downloadRemoteFiles({ 'exact.bin': `${base}/exact` }, dir, { ...LIMITS, maxBytes: 4096 });
    expect(readFileSync(join(dir, 'exact.bin')).equals(content)).toBe(true);
  });

  it('times out a server that never answers within timeoutMs', async () => {
    const base = await serve({ '/silent': stall() });
    const dir = tempDir('cr-remote-');
    const timeoutMs = 300;
    const started = Date.now();
    const error = await failureOf(downloadRemoteFiles({ 'slow.txt': `${base}/silent` }, dir, { ...LIMITS, timeoutMs }));
    expect(error.message).toContain('"slow.txt"');
    expect(error.message).toContain(`timed out after ${timeoutMs} ms`);
    // Not before the limit (a timer may round down by a millisecond); how much later is the machine's business.
    expect(Date.now() - started).toBeGreaterThanOrEqual(timeoutMs - 2);
    expect(filesIn(dir)).toEqual([]);
  });

  it('times out a body that stalls half way and removes the partial file', async () => {
    const base = await serve({ '/half': stall('x'.repeat(500)) });
    const dir = tempDir('cr-remote-');
    const error = await failureOf(downloadRemoteFiles({ 'half.txt': `${base}/half` }, dir, { ...LIMITS, timeoutMs: 300 }));
    expect(error.message).toContain('timed out after 300 ms');
    expect(filesIn(dir)).toEqual([]);
  });

  it('follows redirects to http(s), absolute and relative', async () => {
    const base = await serve({
      '/file': body('redirected'),
      '/absolute': redirect('/relative-hop', 301),
      '/relative-hop': redirect('file', 307),
      '/start': (_request, response) => {
        response.writeHead(302, { location: `${base}/absolute` }).end();
      },
    });
    const dir = tempDir('cr-remote-');
    await downloadRemoteFiles({ 'r.txt': `${base}/start` }, dir, LIMITS);
    expect(readFileSync(join(dir, 'r.txt'), 'utf8')).toBe('redirected');
  });

  it.each([
    ['file:///etc/passwd', 'file:'],
    ['ftp://127.0.0.1/x', 'ftp:'],
    ['data:text/plain,hi', 'data:'],
  ])('refuses a redirect to %s', async (location, scheme) => {
    const base = await serve({ '/go': redirect(location) });
    const dir = tempDir('cr-remote-');
    const error = await failureOf(downloadRemoteFiles({ 'passwd': `${base}/go` }, dir, LIMITS));
    expect(error.message).toContain('"passwd"');
    expect(error.message).toContain(`redirected to a "${scheme}" URL`);
    expect(filesIn(dir)).toEqual([]);
  });

  it('follows 5 redirects and refuses a 6th', async () => {
    const routes: Record<string, Route> = { '/hop0': body('end of the chain') };
    for (let i = 1; i <= 6; i += 1) routes[`/hop${i}`] = redirect(`/hop${i - 1}`);
    const base = await serve(routes);
    const dir = tempDir('cr-remote-');
    await downloadRemoteFiles({ 'five.txt': `${base}/hop5` }, dir, LIMITS);
    expect(readFileSync(join(dir, 'five.txt'), 'utf8')).toBe('end of the chain');
    const error = await failureOf(downloadRemoteFiles({ 'six.txt': `${base}/hop6` }, dir, LIMITS));
    expect(error.message).toContain('"six.txt"');
    expect(error.message).toContain('more than 5 redirects');
    expect(filesIn(dir)).toEqual(['five.txt']);
  });

  it('stops when the caller aborts, with nothing left behind', async () => {
    let requests = 0;
    const base = await serve({ '/half': stall('x'.repeat(100), () => (requests += 1)) });
    const dir = tempDir('cr-remote-');
    const controller = new AbortController();
    const download = failureOf(downloadRemoteFiles({ 'a.txt': `${base}/half` }, dir, LIMITS, controller.signal));
    await vi.waitFor(() => expect(requests).toBe(1));
    controller.abort();
    const error = await download;
    // CANCELED, not a time-out: the abort ended the stalled body, the limit did not.
    expect(error.code).toBe('CANCELED');
    expect(error.message).toContain('"a.txt"');
    expect(filesIn(dir)).toEqual([]);
  });

  it('does not start when the caller has already aborted', async () => {
    let requests = 0;
    const base = await serve({ '/a': (request, response) => {
      requests += 1;
      body('a')(request, response);
    } });
    const dir = tempDir('cr-remote-');
    const error = await failureOf(downloadRemoteFiles({ 'a.txt': `${base}/a` }, dir, LIMITS, AbortSignal.abort()));
    expect(error.code).toBe('CANCELED');
    expect(requests).toBe(0);
    expect(filesIn(dir)).toEqual([]);
  });

  it('reports the first failure at once, canceling the downloads still running', async () => {
    const base = await serve({ '/slow': stall('x'), '/ok': body('ok') });
    const dir = tempDir('cr-remote-');
    const started = Date.now();
    const error = await failureOf(downloadRemoteFiles({ 'slow.txt': `${base}/slow`, 'gone.txt': `${base}/gone` }, dir, LIMITS));
    expect(error.message).toContain('"gone.txt"');
    expect(error.message).toContain('HTTP 404');
    expect(Date.now() - started).toBeLessThan(LIMITS.timeoutMs);
    expect(filesIn(dir)).toEqual([]);
  });

  it('downloads at most 4 files at once', async () => {
    let inFlight = 0;
    let mostInFlight = 0;
    const base = await serve({
      '/f': (_request, response) => {
        inFlight += 1;
        mostInFlight = Math.max(mostInFlight, inFlight);
        // Held open long enough for the downloads to overlap.
        setTimeout(() => {
          inFlight -= 1;
          response.end('f');
        }, 50);
      },
    });
    const dir = tempDir('cr-remote-');
    const files = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`f${i}.txt`, `${base}/f?${i}`]));
    await downloadRemoteFiles(files, dir, LIMITS);
    expect(filesIn(dir)).toHaveLength(12);
    expect(mostInFlight).toBeGreaterThan(1);
    expect(mostInFlight).toBeLessThanOrEqual(4);
  });

  it('replaces a symbolic link at the file name instead of writing where it points', async () => {
    const base = await serve({ '/a': body('downloaded') });
    const dir = tempDir('cr-remote-');
    const outside = join(tempDir('cr-outside-'), 'target.txt');
    writeFileSync(outside, 'precious');
    symlinkSync(outside, join(dir, 'a.txt'));
    await downloadRemoteFiles({ 'a.txt': `${base}/a` }, dir, LIMITS);
    expect(readFileSync(outside, 'utf8')).toBe('precious');
    expect(lstatSync(join(dir, 'a.txt')).isSymbolicLink()).toBe(false);
    expect(readFileSync(join(dir, 'a.txt'), 'utf8')).toBe('downloaded');
  });

  it('enforces maxFiles before downloading anything', async () => {
    let requests = 0;
    const base = await serve({ '/a': (request, response) => {
      requests += 1;
      body('a')(request, response);
    } });
    const dir = tempDir('cr-remote-');
    const files = { 'a.txt': `${base}/a`, 'b.txt': `${base}/a`, 'c.txt': `${base}/a` };
    const error = await failureOf(downloadRemoteFiles(files, dir, { ...LIMITS, maxFiles: 2 }));
    expect(error.message).toContain('at most 2');
    expect(requests).toBe(0);
  });
});

describe('credentials in URLs', () => {
  it('sends them as Basic authorization', async () => {
    const base = await serve({
      '/private': (request, response) => {
        if (request.headers.authorization !== `Basic ${Buffer.from('me:hunter2').toString('base64')}`) {
          response.writeHead(401).end();
          return;
        }
        response.end('secret data');
      },
    });
    const dir = tempDir('cr-remote-');
    await downloadRemoteFiles({ 'p.txt': base.replace('http://', 'http://me:hunter2@') + '/private' }, dir, LIMITS);
    expect(readFileSync(join(dir, 'p.txt'), 'utf8')).toBe('secret data');
  });

  it('masks them in error messages', async () => {
    const base = await serve({});
    const dir = tempDir('cr-remote-');
    const withPassword = await failureOf(
      downloadRemoteFiles({ 'a.txt': base.replace('http://', 'http://me:hunter2@') + '/nope' }, dir, LIMITS),
    );
    expect(withPassword.message).toContain('HTTP 404');
    expect(withPassword.message).toContain('***@127.0.0.1');
    expect(withPassword.message).not.toContain('hunter2');
    expect(withPassword.message).not.toContain('me:');
    const tokenOnly = await failureOf(
      downloadRemoteFiles({ 'a.txt': base.replace('http://', 'http://ghp_token123@') + '/nope' }, dir, LIMITS),
    );
    expect(tokenOnly.message).not.toContain('ghp_token123');
  });

  it('masks them when the server cannot be reached', async () => {
    const base = await serve({});
    servers[0]!.closeAllConnections();
    await new Promise<void>((resolve) => servers.shift()!.close(() => resolve()));
    const dir = tempDir('cr-remote-');
    const error = await failureOf(downloadRemoteFiles({ 'a.txt': base.replace('http://', 'http://me:hunter2@') + '/x' }, dir, LIMITS));
    expect(error.message).toContain('"a.txt"');
    expect(error.message).toContain('ECONNREFUSED');
    expect(error.message).not.toContain('hunter2');
  });

  it('keeps them on the same origin and drops them on a redirect to another', async () => {
    const seen: (string | undefined)[] = [];
    const other = await serve({
      '/file': (request, response) => {
        seen.push(request.headers.authorization);
        response.end('other');
      },
    });
    const base = await serve({
      '/start': redirect('/same'),
      '/same': (request, response) => {
        seen.push(request.headers.authorization);
        response.writeHead(302, { location: `${other}/file` }).end();
      },
    });
    const dir = tempDir('cr-remote-');
    await downloadRemoteFiles({ 'o.txt': base.replace('http://', 'http://me:hunter2@') + '/start' }, dir, LIMITS);
    expect(seen).toEqual([`Basic ${Buffer.from('me:hunter2').toString('base64')}`, undefined]);
  });
});

describe('validateRemoteFiles', () => {
  it('returns a frozen copy of good entries', () => {
    const files = validateRemoteFiles({ 'a.txt': 'https://example.com/a', 'B_2-x.tar.gz': 'HTTP://example.com/b' }, LIMITS);
    expect(files).toEqual({ 'a.txt': 'https://example.com/a', 'B_2-x.tar.gz': 'HTTP://example.com/b' });
    expect(Object.isFrozen(files)).toBe(true);
    expect(validateRemoteFiles({}, LIMITS)).toEqual({});
  });

  it.each(['../x', 'a/b', 'a\\b', '.hidden', '.', '..', '', '-rf', '_x', 'a b', 'é.txt', 'a'.repeat(256)])(
    'refuses the name %j',
    (name) => {
      const check = () => validateRemoteFiles({ [name]: 'https://example.com/a' }, LIMITS);
      expect(check).toThrow(ClusterRunnerError);
      expect(check).toThrow(/remote_files name .* is not a plain file name/);
    },
  );

  it('accepts a name of 255 characters', () => {
    expect(() => validateRemoteFiles({ ['a'.repeat(255)]: 'https://example.com/a' }, LIMITS)).not.toThrow();
  });

  it.each([
    ['file:///etc/passwd', /"file:" URLs are not allowed/],
    ['ftp://example.com/x', /"ftp:" URLs are not allowed/],
    ['javascript:alert(1)', /"javascript:" URLs are not allowed/],
    ['not a url', /the URL is not valid/],
    ['/etc/passwd', /the URL is not valid/],
    [42, /must be a string/],
    [`https://example.com/${'a'.repeat(4096)}`, /longer than 4096/],
  ])('refuses the URL %s, naming the entry', (url, message) => {
    const check = () => validateRemoteFiles({ 'a.txt': url }, LIMITS);
    expect(check).toThrow(message);
    expect(check).toThrow(/"a\.txt"/);
  });

  it('masks credentials in a refused URL', () => {
    for (const url of ['me:hunter2@host', 'https://me:hunter2@exa mple.com/', 'ftp://me:hunter2@example.com/']) {
      expect(() => validateRemoteFiles({ 'a.txt': url }, LIMITS)).toThrow(/"a\.txt"/);
      expect(() => validateRemoteFiles({ 'a.txt': url }, LIMITS)).not.toThrow(/hunter2/);
    }
  });

  it.each([null, [], 'https://example.com/a', 42, new Map()])('refuses %j as the whole value', (files) => {
    expect(() => validateRemoteFiles(files, LIMITS)).toThrow(/"remote_files" must be an object/);
  });

  it('enforces maxFiles', () => {
    const files = { 'a.txt': 'https://x/a', 'b.txt': 'https://x/b', 'c.txt': 'https://x/c' };
    expect(() => validateRemoteFiles(files, { maxFiles: 2 })).toThrow(/lists 3 files; at most 2 are allowed/);
    expect(Object.keys(validateRemoteFiles(files, { maxFiles: 3 }))).toHaveLength(3);
  });
});
