/**
 * Security suite: input the HTTP API must refuse, driven over loopback against a real master. Malformed,
 * non-UTF-8, oversized, deeply nested and wrongly typed JSON, unknown keys, bad ids in paths, bad query
 * values, wrong methods, malformed HTTP framing (request smuggling), and slow or stalled clients. Each case
 * gets a 4xx that says what is wrong (or is cut off by the server's timeouts), never a 5xx; after each table
 * the master still answers and has created nothing, and the build it holds was not touched.
 *
 * Refused requests carry a valid digest of their exact bytes, so what is tested is the input handling, not
 * authentication (test/security/auth-and-injection.test.ts and http-auth.test.ts cover that).
 */
import { createHmac } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  api, cleanupAll, digest, postBuild, readApiResponse, startTestMaster, tempDir, waitForBuild, type ApiResponse, type TestMaster,
} from '../support/cluster.ts';
import { expectFailure } from '../support/http-expect.ts';

afterAll(cleanupAll);

const DIGEST = 'ClusterRunner-Message-Authentication-Digest';
const JOB = { commands: ['true'], atomizers: [{ X: 'seq 1 3' }] };
/** Short enough for a test, long enough that a loaded 2-core machine answers real requests well within them. */
const TIMEOUTS = { httpRequestTimeoutMs: 1_500, httpHeadersTimeoutMs: 1_000 };

/** The master most tables run against, with one build waiting for a worker (id `fixture`) that must stay as it is. */
let master: TestMaster;
let fixture: number;
let project: string;

beforeAll(async () => {
  master = await startTestMaster();
  project = tempDir('cr-project-');
  fixture = await waitingBuild(master);
});

/** A path from a table: `{fixture}` is the waiting build's id, `{N nines}` a run of N nines (kept out of test names). */
function at(path: string): string {
  return path.replaceAll('{fixture}', String(fixture)).replace(/\{(\d+) nines\}/g, (_all, count: string) => '9'.repeat(Number(count)));
}

/** A build that prepares and then waits for a worker that never comes. */
async function waitingBuild(target: TestMaster): Promise<number> {
  const id = await postBuild(target, { type: 'directory', project_directory: tempDir(), config: JOB });
  await waitForBuild(target, id, (build) => build.status === 'PREPARING' && build.num_atoms === 3);
  return id;
}

/** The original's body digest of exact bytes (the support's digest() takes text). */
function bytesDigest(secret: string, bytes: Buffer): string {
  return createHmac('sha512', secret).update(bytes).digest('hex');
}

/** Sends exact bytes with a valid digest of them, as a client with the secret but a broken encoder would. */
async function sendBytes(target: TestMaster, method: string, path: string, bytes: Buffer, headers: Record<string, string> = {}): Promise<ApiResponse> {
  const response = await fetch(`${target.url}${path}`, {
    method, body: bytes, headers: { 'Content-Type': 'application/json', [DIGEST]: bytesDigest(target.secret, bytes), ...headers },
  });
  return readApiResponse(response);
}

/**
 * GET / answers, the build lists (v1, v2 and the queue) hold exactly `ids`, and the fixture, when given, is
 * still waiting: no refused request created, canceled or started anything.
 */
async function expectUnharmed(target: TestMaster, ids: readonly number[], waiting?: number): Promise<void> {
  expect((await api(target, 'GET', '/')).status).toBe(200);
  const v1 = await api(target, 'GET', '/v1/build');
  expect(v1.status).toBe(200);
  const builds = v1.body.builds as { id: number; request_params: unknown }[];
  expect(builds.map((build) => build.id), `builds created: ${JSON.stringify(builds.map((b) => [b.id, b.request_params]))}`).toEqual(ids);
  const v2 = await api(target, 'GET', '/v2/builds?limit=200');
  expect((v2.body.builds as { id: number }[]).map((build) => build.id)).toEqual(ids);
  const queue = await api(target, 'GET', '/v1/queue');
  expect((queue.body.queue as { id: number }[]).every((build) => ids.includes(build.id)), queue.text).toBe(true);
  if (waiting !== undefined) expect((await api(target, 'GET', `/v1/build/${waiting}`)).body.build.status).toBe('PREPARING');
}

// ---------------------------------------------------------------------------------------------------------

describe('malformed JSON', () => {
  const body = () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB });
  const NOT_JSON = 'The request body is not valid JSON.';
  /** [what is wrong, the raw body, the error it must get] */
  const CASES: readonly [string, () => string | Buffer, string][] = [
    ['truncated object', () => '{"type": "directory", ', NOT_JSON],
    ['truncated inside a string', () => body().slice(0, 20), NOT_JSON],
    ['truncated after a key', () => '{"type"', NOT_JSON],
    ['trailing garbage', () => `${body()} trailing`, NOT_JSON],
    ['two documents', () => `${body()}${body()}`, NOT_JSON],
    ['a UTF-8 byte order mark', () => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(body())]), NOT_JSON],
    ['NaN', () => body().replace('}', ', "priority": NaN}'), NOT_JSON],
    ['Infinity', () => body().replace('}', ', "priority": Infinity}'), NOT_JSON],
    ['single quotes', () => body().replaceAll('"', "'"), NOT_JSON],
    ['unquoted keys', () => `{type: "directory", project_directory: ${JSON.stringify(project)}}`, NOT_JSON],
    ['a trailing comma', () => body().replace(/}$/, ',}'), NOT_JSON],
    ['a comment', () => body().replace('{', '{/* hello */'), NOT_JSON],
    ['a raw newline inside a string', () => body().replace('directory', 'direc\ntory'), NOT_JSON],
    ['a raw NUL inside a string', () => body().replace('directory', 'direc\u0000tory'), NOT_JSON],
    ['control characters only', () => '\u0000\u0001\u0002', NOT_JSON],
    ['a duplicate key, unterminated', () => '{"type": "directory", "type": "directory"', NOT_JSON],
    ['whitespace only', () => ' \r\n\t ', NOT_JSON],
    ['UTF-16 (little-endian)', () => Buffer.from(body(), 'utf16le'), NOT_JSON],
    ['hex escapes', () => '{"type": "\\x64irectory"}', NOT_JSON],
    ['not JSON at all', () => 'not json at all', NOT_JSON],
    ['an empty body (read as {})', () => '', 'Invalid build request type.'],
  ];

  it.each(CASES)('%s: 400', async (_what, raw, error) => {
    const bytes = raw();
    expectFailure(await sendBytes(master, 'POST', '/v1/build', Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes)), 400, error);
  });

  it('refuses the same on PUT /v1/build/:id and worker shutdown', async () => {
    for (const raw of ['{"status": "canceled"', '{"status": \'canceled\'}', '{"status": "canceled"} x', '\u0000']) {
      expectFailure(await sendBytes(master, 'PUT', `/v1/build/${fixture}`, Buffer.from(raw)), 400, NOT_JSON);
    }
    for (const raw of ['{"shutdown_all": true', '{"shutdown_all": True}', '{"workers": [NaN]}', '{"workers": [1,]}']) {
      expectFailure(await sendBytes(master, 'POST', '/v1/worker/shutdown', Buffer.from(raw)), 400, NOT_JSON);
    }
  });

  it('leaves the master serving, with nothing created or canceled', async () => {
    await expectUnharmed(master, [fixture], fixture);
  });
});

describe('bytes that are not UTF-8', () => {
  /*
   * SPEC §1: bodies are UTF-8 JSON. Each body here is a valid build request but for its bytes: a decoder that
   * replaces what it cannot read with U+FFFD would accept it and run something other than what was signed.
   */
  let latin: TestMaster;
  beforeAll(async () => {
    latin = await startTestMaster();
  });
  const request = (field: string, before: string, bad: readonly number[], after = '') => () => {
    const prefix = JSON.stringify({ type: 'directory', project_directory: project, config: JOB, [field]: '@' }).split('"@"');
    return Buffer.concat([Buffer.from(`${prefix[0]}"${before}`), Buffer.from(bad), Buffer.from(`${after}"${prefix[1]}`)]);
  };
  const CASES: readonly [string, () => Buffer][] = [
    ['0xFF 0xFE inside a string', request('job_name', 'job', [0xff, 0xfe])],
    ['a Latin-1 é', request('job_name', 'caf', [0xe9])],
    ['a lone continuation byte', request('job_name', 'a', [0x80], 'b')],
    ['an overlong "/" (0xC0 0xAF)', request('job_name', 'a', [0xc0, 0xaf], 'b')],
    ['a truncated 3-byte sequence', request('job_name', 'euro', [0xe2, 0x82])],
    ['a UTF-16 surrogate encoded as UTF-8 (CESU-8)', request('job_name', 'a', [0xed, 0xa0, 0x80])],
    ['a byte past U+10FFFF (0xF5)', request('job_name', 'a', [0xf5, 0x80, 0x80, 0x80])],
    ['a bad byte in an atom', () => {
      const prefix = JSON.stringify({ type: 'directory', project_directory: project, config: JOB, atoms_override: ['@'] }).split('"@"');
      return Buffer.concat([Buffer.from(`${prefix[0]}"export X=\\"`), Buffer.from([0xff]), Buffer.from(`\\";"${prefix[1]}`)]);
    }],
  ];

  it.each(CASES)('%s: 400', async (_what, bytes) => {
    expectFailure(await sendBytes(latin, 'POST', '/v1/build', bytes()), 400);
  });

  it('leaves the master serving, with nothing created', async () => {
    await expectUnharmed(latin, []);
  });
});

describe('oversized bodies', () => {
  const LIMIT = 2048;
  let small: TestMaster;
  let waiting: number;
  beforeAll(async () => {
    small = await startTestMaster({ conf: { maxBodyBytes: LIMIT } });
    waiting = await waitingBuild(small);
  });
  const TOO_LARGE = /larger than the limit of 2048 bytes/;
  const bigBuild = () => JSON.stringify({ type: 'directory', project_directory: project, config: { ...JOB, commands: [`echo ${'x'.repeat(3000)}`] } });
  /** [what, method, path, body, sign] */
  const CASES: readonly [string, string, () => string, () => string | Buffer, boolean][] = [
    ['a signed build of 3000 bytes', 'POST', () => '/v1/build', bigBuild, true],
    ['an unsigned body one byte over (size is checked before the digest)', 'POST', () => '/v1/build', () => 'x'.repeat(LIMIT + 1), false],
    ['1 MiB of padding', 'POST', () => '/v1/build', () => `${bigBuild()}${' '.repeat(1024 * 1024)}`, true],
    ['in the v2 tree', 'POST', () => '/v2/builds', bigBuild, true],
    ['in the unversioned tree', 'POST', () => '/build', bigBuild, true],
    ['a cancel with padding', 'PUT', () => `/v1/build/${waiting}`, () => JSON.stringify({ status: 'canceled', pad: 'x'.repeat(3000) }), true],
    ['a shutdown of 2000 workers', 'POST', () => '/v1/worker/shutdown', () => JSON.stringify({ workers: Array(2000).fill(1) }), true],
    ['a shutdown of one worker with a body', 'POST', () => '/v1/worker/1/shutdown', () => 'x'.repeat(3000), true],
    ['gzip that inflates from ~1 KiB to 1 MiB', 'POST', () => '/v1/build', () => gzipSync(Buffer.from(`${bigBuild()}${' '.repeat(1024 * 1024)}`)), true],
  ];

  it.each(CASES)('%s: 413', async (_what, method, path, body, isSigned) => {
    const raw = body();
    const bytes = Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
    const headers: Record<string, string> = Buffer.isBuffer(raw) ? { 'Content-Encoding': 'gzip' } : {};
    if (!isSigned) headers[DIGEST] = 'f'.repeat(128);
    expectFailure(await sendBytes(small, method, path(), bytes, headers), 413, TOO_LARGE);
  });

  it('a chunked body (no Content-Length) over the limit: 413', async () => {
    const chunk = 'x'.repeat(4096);
    const { status } = await rawExchange(small, (socket) => {
      socket.write(`POST /v1/build HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`);
    }, { isDoneAtAnswer: true });
    expect(status).toBe(413);
  });

  it('leaves the master serving, with nothing created or canceled; a body of exactly the limit is taken', async () => {
    await expectUnharmed(small, [waiting], waiting);
    const exact = JSON.stringify({ type: 'directory', project_directory: project, config: JOB }).padEnd(LIMIT, ' ');
    expect(Buffer.byteLength(exact)).toBe(LIMIT);
    const response = await api(small, 'POST', '/v1/build', { raw: exact });
    expect(response.status, response.text).toBe(202);
  });
});

describe('deeply nested JSON', () => {
  const deep = (open: string, close: string, depth = 10_000, inner = '1') => `${open.repeat(depth)}${inner}${close.repeat(depth)}`;
  const dir = () => JSON.stringify(project);
  const NESTED = /nested more than 64 levels deep|not valid JSON/;
  /** [what, method, path, body] */
  const CASES: readonly [string, string, () => string, () => string][] = [
    ['arrays 10,000 deep', 'POST', () => '/v1/build', () => deep('[', ']')],
    ['objects 10,000 deep', 'POST', () => '/v1/build', () => deep('{"a":', '}')],
    ['arrays and objects mixed, 10,000 deep', 'POST', () => '/v1/build', () => deep('[{"a":', '}]')],
    ['arrays 100,000 deep', 'POST', () => '/v1/build', () => deep('[', ']', 100_000)],
    ['an inline config 10,000 deep', 'POST', () => '/v1/build', () => `{"type": "directory", "project_directory": ${dir()}, "config": ${deep('{"a":', '}')}}`],
    ['an inline config 65 deep (just over the limit)', 'POST', () => '/v1/build',
      () => `{"type": "directory", "project_directory": ${dir()}, "config": {"commands": ["true"], "atomizers": [{"X": "seq 1 3"}], "x": ${deep('{"a":', '}', 63)}}}`],
    ['atoms_override 10,000 deep', 'POST', () => '/v1/build', () => `{"type": "directory", "project_directory": ${dir()}, "atoms_override": ${deep('[', ']', 10_000, '"x"')}}`],
    ['remote_files 10,000 deep', 'POST', () => '/v1/build', () => `{"type": "directory", "project_directory": ${dir()}, "remote_files": {"f": ${deep('[', ']')}}}`],
    ['an unknown key holding 10,000 levels', 'POST', () => '/v1/build', () => `{"type": "directory", "project_directory": ${dir()}, "junk": ${deep('{"a":', '}')}}`],
    ['a cancel status 10,000 deep', 'PUT', () => `/v1/build/${fixture}`, () => `{"status": ${deep('[', ']', 10_000, '"canceled"')}}`],
    ['a cancel with a deep extra key', 'PUT', () => `/v1/build/${fixture}`, () => `{"status": "canceled", "x": ${deep('{"a":', '}')}}`],
    ['a cancel that is only arrays', 'PUT', () => `/v1/build/${fixture}`, () => deep('[', ']')],
    ['a worker list 10,000 deep', 'POST', () => '/v1/worker/shutdown', () => `{"workers": ${deep('[', ']')}}`],
    ['a worker list of deep objects', 'POST', () => '/v1/worker/shutdown', () => `{"workers": [${deep('{"a":', '}')}]}`],
    ['shutdown_all 10,000 deep', 'POST', () => '/v1/worker/shutdown', () => `{"shutdown_all": ${deep('[', ']')}}`],
  ];

  it.each(CASES)('%s: 400', async (_what, method, path, body) => {
    expectFailure(await api(master, method, path(), { raw: body() }), 400, NESTED);
  });

  it('leaves the master serving, with nothing created or canceled', async () => {
    await expectUnharmed(master, [fixture], fixture);
  });
});

describe('wrong types for the fields of POST /v1/build', () => {
  const directory = () => ({ type: 'directory', project_directory: project, config: JOB });
  const git = () => ({ type: 'git', url: 'https://example.invalid/org/repo.git' });
  /** [what, the fields put over a valid body, which valid body, what the error must name] */
  const CASES: readonly [string, Record<string, unknown>, 'directory' | 'git', string][] = [
    ['type a number', { type: 5 }, 'directory', 'Invalid build request type.'],
    ['type null', { type: null }, 'directory', 'Invalid build request type.'],
    ['type empty', { type: '' }, 'directory', 'Invalid build request type.'],
    ['type a list', { type: ['directory'] }, 'directory', 'Invalid build request type.'],
    ['type an object', { type: { git: true } }, 'git', 'Invalid build request type.'],
    ['type unknown', { type: 'svn' }, 'directory', 'Invalid build request type.'],
    ['type with a space', { type: 'git ' }, 'git', 'Invalid build request type.'],
    ['url a number', { url: 5 }, 'git', 'url'],
    ['url null', { url: null }, 'git', 'url'],
    ['url empty', { url: '' }, 'git', 'url'],
    ['url a list', { url: ['https://example.invalid/repo'] }, 'git', 'url'],
    ['url an object', { url: { href: 'https://example.invalid/repo' } }, 'git', 'url'],
    ['url true', { url: true }, 'git', 'url'],
    ['url over 4096 characters', { url: `https://example.invalid/${'a'.repeat(4100)}` }, 'git', 'url'],
    // null for an optional field means absent (issue 17: the original client sends "job_name": null): test/compat.
    ['branch a number', { branch: 5 }, 'git', 'branch'],
    ['branch empty', { branch: '' }, 'git', 'branch'],
    ['branch a list', { branch: ['main'] }, 'git', 'branch'],
    ['branch an object', { branch: { name: 'main' } }, 'git', 'branch'],
    ['hash a number', { hash: 5 }, 'git', 'hash'],
    ['hash too short', { hash: 'a'.repeat(39) }, 'git', 'hash'],
    ['hash not hex', { hash: 'g'.repeat(40) }, 'git', 'hash'],
    ['hash a list', { hash: ['a'.repeat(40)] }, 'git', 'hash'],
    ['hash true', { hash: true }, 'git', 'hash'],
    ['remote a number', { remote: 5 }, 'git', 'remote'],
    ['remote empty', { remote: '' }, 'git', 'remote'],
    ['remote a list', { remote: ['origin'] }, 'git', 'remote'],
    ['project_directory a number', { project_directory: 5 }, 'directory', 'project_directory'],
    ['project_directory a list', { project_directory: ['/tmp'] }, 'directory', 'project_directory'],
    ['project_directory an object', { project_directory: { $gt: '' } }, 'directory', 'project_directory'],
    ['project_directory relative', { project_directory: 'relative/path' }, 'directory', 'project_directory'],
    ['project_directory empty', { project_directory: '' }, 'directory', 'project_directory'],
    ['project_directory null', { project_directory: null }, 'directory', 'project_directory'],
    ['project_directory 1e999 (Infinity)', { project_directory: Infinity }, 'directory', 'project_directory'],
    ['project_directory climbing out of a git repository', { project_directory: '../../etc' }, 'git', 'project_directory'],
    ['project_directory absolute in a git repository', { project_directory: '/etc' }, 'git', 'project_directory'],
    ['project_directory inside .git', { project_directory: 'a/.git/hooks' }, 'git', 'project_directory'],
    ['job_name a number', { job_name: 5 }, 'directory', 'job_name'],
    ['job_name an object', { job_name: { a: 1 } }, 'directory', 'job_name'],
    ['job_name empty', { job_name: '' }, 'directory', 'job_name'],
    ['job_name a list', { job_name: ['Job'] }, 'directory', 'job_name'],
    ['job_name true', { job_name: true }, 'directory', 'job_name'],
    ['config a string', { config: 'commands: [true]' }, 'directory', 'config'],
    ['config a list', { config: [1, 2] }, 'directory', 'config'],
    ['config a number', { config: 5 }, 'directory', 'config'],
    ['config true', { config: true }, 'directory', 'config'],
    ['remote_files a list', { remote_files: ['https://example.com/x'] }, 'directory', 'remote_files'],
    ['remote_files a string', { remote_files: 'https://example.com/x' }, 'directory', 'remote_files'],
    ['remote_files with a number', { remote_files: { 'a.txt': 5 } }, 'directory', 'remote_files'],
    ['remote_files with an object', { remote_files: { a: { b: { c: [] } } } }, 'directory', 'remote_files'],
    ['remote_files with ftp://', { remote_files: { 'a.txt': 'ftp://example.com/x' } }, 'directory', 'remote_files'],
    ['remote_files with file://', { remote_files: { 'a.txt': 'file:///etc/passwd' } }, 'directory', 'remote_files'],
    ['remote_files with a name climbing out', { remote_files: { '../escape': 'https://example.com/x' } }, 'directory', 'remote_files'],
    ['remote_files with an absolute name', { remote_files: { '/etc/cron.d/x': 'https://example.com/x' } }, 'directory', 'remote_files'],
    ['atoms_override a string', { atoms_override: 'export X="1";' }, 'directory', 'atoms_override'],
    ['atoms_override of numbers', { atoms_override: [1, 2] }, 'directory', 'atoms_override'],
    ['atoms_override with null', { atoms_override: [null] }, 'directory', 'atoms_override'],
    ['atoms_override an object', { atoms_override: { a: 1 } }, 'directory', 'atoms_override'],
    ['atoms_override nested lists', { atoms_override: [[[['x']]]] }, 'directory', 'atoms_override'],
    ['priority a word', { priority: 'high' }, 'directory', 'priority'],
    ['priority numeric text', { priority: '1' }, 'directory', 'priority'],
    ['priority a fraction', { priority: 1.5 }, 'directory', 'priority'],
    ['priority true', { priority: true }, 'directory', 'priority'],
    ['priority a list', { priority: [1] }, 'directory', 'priority'],
    ['priority too large', { priority: 99999999999999999999 }, 'directory', 'priority'],
    ['priority too small', { priority: -1e7 }, 'directory', 'priority'],
    ['priority 1e400 (Infinity)', { priority: Infinity }, 'directory', 'priority'],
  ];

  it.each(CASES)('%s: 400 naming it', async (_what, fields, base, named) => {
    // JSON.stringify writes Infinity as null; these go out as the literal 1e999/1e400 a client could send.
    const raw = JSON.stringify({ ...(base === 'git' ? git() : directory()), ...fields }, (_key, value: unknown) => (value === Infinity ? '__INF__' : value))
      .replace('"__INF__"', '1e999');
    const response = await api(master, 'POST', '/v1/build', { raw });
    expectFailure(response, 400);
    expect(response.body.error).toContain(named);
  });

  it.each<[string, string]>([
    ['[]', 'must be a JSON object'], ['null', 'must be a JSON object'], ['42', 'must be a JSON object'],
    ['-1.5e308', 'must be a JSON object'], ['"directory"', 'must be a JSON object'], ['true', 'must be a JSON object'],
    ['[{"type": "directory"}]', 'must be a JSON object'],
  ])('the body %s: 400', async (raw, error) => {
    expectFailure(await api(master, 'POST', '/v1/build', { raw }), 400, new RegExp(error));
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['directory without project_directory', { type: 'directory' }, 'Missing required parameter. Required parameters: [project_directory]'],
    ['directory with a null project_directory', { type: 'directory', project_directory: null }, 'Missing required parameter. Required parameters: [project_directory]'],
    ['git without url', { type: 'git' }, 'Missing required parameter. Required parameters: [url]'],
    ['git with project_directory but no url', { type: 'GIT', project_directory: 'sub' }, 'Missing required parameter. Required parameters: [url]'],
    ['no type', { project_directory: project }, 'Invalid build request type.'],
  ])('%s: 400 with the SPEC §3 message', async (_what, body, error) => {
    expectFailure(await api(master, 'POST', '/v1/build', { json: body }), 400, error);
  });

  it.each<[string, unknown]>([
    ['status a list', { status: ['canceled'] }], ['status null', { status: null }], ['status a number', { status: 5 }],
    ['status an object', { status: { value: 'canceled' } }], ['status another word', { status: 'cancel' }],
    ['status with a space', { status: 'canceled ' }], ['status empty', { status: '' }], ['no status', {}],
    ['the body a list', ['canceled']], ['the body a string', 'canceled'],
  ])('PUT /v1/build/:id with %s: 400', async (_what, body) => {
    expectFailure(await api(master, 'PUT', `/v1/build/${fixture}`, { json: body }), 400);
  });

  it.each<[string, unknown]>([
    ['shutdown_all as text', { shutdown_all: 'true' }], ['shutdown_all 1', { shutdown_all: 1 }], ['shutdown_all false', { shutdown_all: false }],
    ['a fractional id', { workers: [1.5] }], ['a negative id', { workers: [-1] }], ['an id as words', { workers: ['one'] }],
    ['no ids', { workers: [] }], ['ids in an object', { workers: { 0: 1 } }], ['slaves as text', { slaves: 'x' }],
    ['an id too large', { workers: [1e20] }], ['an empty body', {}], ['the body a list', [1]],
  ])('POST /v1/worker/shutdown with %s: 400', async (_what, body) => {
    expectFailure(await api(master, 'POST', '/v1/worker/shutdown', { json: body }), 400);
  });

  it('a NUL in a path is not a folder that exists: refused now or an ERROR build later, never a 5xx', async () => {
    const other = await startTestMaster();
    const nul = await api(other, 'POST', '/v1/build', { raw: '{"type": "directory", "project_directory": "/tmp\\u0000/x", "config": {}}' });
    expect(nul.status, nul.text).toBeLessThan(500);
    if (nul.status === 202) expect((await waitForBuild(other, nul.body.build_id)).status).toBe('ERROR');
    else expectFailure(nul, 400);
    expect((await api(other, 'GET', '/v1')).status).toBe(200);
  });

  it('leaves the master serving, with nothing created or canceled', async () => {
    await expectUnharmed(master, [fixture], fixture);
  });
});

describe('unknown keys', () => {
  /** [the key the error must name, method, path, raw body] */
  const CASES: readonly [string, string, string, () => string][] = [
    ['colour', 'POST', '/v1/build', () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB, colour: 'red' })],
    ['bogus_key', 'POST', '/v1/build', () => JSON.stringify({ bogus_key: 1 })],
    ['__proto__', 'POST', '/v1/build', () => `{"__proto__": {"type": "directory"}, "project_directory": ${JSON.stringify(project)}}`],
    ['constructor', 'POST', '/v1/build', () => JSON.stringify({ constructor: { prototype: { x: 1 } } })],
    ['hasOwnProperty', 'POST', '/v1/build', () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB, hasOwnProperty: 1 })],
    ['Type', 'POST', '/v1/build', () => JSON.stringify({ Type: 'directory', project_directory: project })],
    ['project-directory', 'POST', '/v1/build', () => JSON.stringify({ type: 'directory', 'project-directory': project })],
    ['"type "', 'POST', '/v1/build', () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB, 'type ': 'git' })],
    ['""', 'POST', '/v1/build', () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB, '': 1 })],
    ['status', 'POST', '/v1/build', () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB, status: 'canceled' })],
    ['upload_pack', 'POST', '/v1/build', () => JSON.stringify({ type: 'git', url: 'https://example.invalid/r.git', upload_pack: 'touch /tmp/x' })],
    ['secret', 'POST', '/v2/builds', () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB, secret: 'x' })],
    ['force', 'PUT', '/v1/build/{fixture}', () => JSON.stringify({ status: 'canceled', force: true })],
    ['Status', 'PUT', '/v1/build/{fixture}', () => JSON.stringify({ Status: 'canceled' })],
    ['__proto__', 'PUT', '/v1/build/{fixture}', () => '{"status": "canceled", "__proto__": {"status": "canceled"}}'],
    ['all', 'POST', '/v1/worker/shutdown', () => JSON.stringify({ workers: [1], all: true })],
    ['worker', 'POST', '/v1/worker/shutdown', () => JSON.stringify({ shutdown_all: true, worker: 1 })],
    ['now', 'POST', '/v1/slave/shutdown', () => JSON.stringify({ shutdown_all: true, now: true })],
    ['now', 'POST', '/v1/worker/1/shutdown', () => JSON.stringify({ now: true })],
  ];

  it.each(CASES)('%s in %s %s: 400 naming it', async (key, method, path, body) => {
    const response = await api(master, method, at(path), { raw: body() });
    expectFailure(response, 400);
    expect(response.body.error).toContain(key);
  });

  it('leaves the master serving, with nothing created or canceled', async () => {
    await expectUnharmed(master, [fixture], fixture);
  });
});

describe('bad ids in paths', () => {
  /** [method, path, status]; 431 is Node's own answer to a request line over its header size limit. */
  const CASES: readonly [string, string, number][] = [
    ['GET', '/v1/build/abc', 400],
    ['GET', '/v1/build/-1', 400],
    ['GET', '/v1/build/1.5', 400],
    ['GET', '/v1/build/1e3', 400],
    ['GET', '/v1/build/0x10', 400],
    ['GET', '/v1/build/+1', 400],
    ['GET', '/v1/build/%20', 400],
    ['GET', '/v1/build/%00', 400],
    ['GET', '/v1/build/..%2f..', 400],
    ['GET', '/v1/build/..%2F..%2F..%2Fetc%2Fpasswd', 400],
    ['GET', '/v1/build/1%2F2', 400],
    ['GET', '/v1/build/%ZZ', 400],
    ['GET', '/v1/build/%EF%BC%91', 400], // a full-width digit one
    ['GET', '/v1/build/99999999999999999999', 400],
    ['GET', '/v1/build/9007199254740993', 400], // past Number.MAX_SAFE_INTEGER
    ['GET', '/v1/build/{5000 nines}', 400],
    ['GET', '/v1/build/{20000 nines}', 431],
    ['GET', '/v1/build/424242', 404],
    ['GET', '/v1/build/abc/subjob', 400],
    ['GET', '/v1/build/{fixture}/subjob/abc', 400],
    ['GET', '/v1/build/{fixture}/subjob/-1/atom', 400],
    ['GET', '/v1/build/{fixture}/subjob/0/atom/1e3', 400],
    ['GET', '/v1/build/{fixture}/subjob/0/atom/%00/console', 400],
    ['GET', '/v1/build/{fixture}/subjob/99/atom/0/console', 404],
    ['GET', '/v1/build/abc/artifacts.tar.gz', 400],
    ['GET', '/v1/build/-1/artifacts.zip', 400],
    ['GET', '/v1/build/abc/result', 400],
    ['GET', '/v1/worker/abc', 400],
    ['GET', '/v1/worker/-3', 400],
    ['GET', '/v1/slave/%00', 400],
    ['GET', '/v1/worker/99999999999999999999', 400],
    ['GET', '/v1/worker/%E0%A4%A', 400],
    ['GET', '/v1/worker/42', 404],
    ['GET', '/v2/builds/abc', 400],
    ['GET', '/v2/builds/{fixture}/subjobs/x', 400],
    ['GET', '/build/0x10', 400],
    ['PUT', '/v1/build/abc', 400],
    ['PUT', '/v1/build/-1', 400],
    ['PUT', '/v1/build/..%2f..', 400],
    ['PUT', '/v1/build/99999999999999999999', 400],
    ['PUT', '/v1/build/424242', 404],
    ['POST', '/v1/worker/abc/shutdown', 400],
    ['POST', '/v1/worker/%00/shutdown', 400],
    ['POST', '/v1/worker/1e3/shutdown', 400],
    ['POST', '/v1/slave/424242/shutdown', 404],
  ];

  it.each(CASES)('%s %s: %i', async (method, path, status) => {
    const options = method === 'PUT' ? { json: { status: 'canceled' } } : method === 'POST' ? { raw: '' } : {};
    const response = await api(master, method, at(path), options);
    if (status === 431) expect(response.status).toBe(431);
    else expectFailure(response, status);
  });

  it('blames a malformed escape in a path on the path, not on a request body', async () => {
    // GETs without a body: an error that talks of "the request body" sends the user looking in the wrong place.
    for (const path of ['/v1/build/%ZZ', '/v1/worker/%E0%A4%A', '/v1/build/{fixture}/subjob/%']) {
      const response = await api(master, 'GET', at(path));
      expectFailure(response, 400);
      expect(response.body.error, path).not.toMatch(/body/i);
      expect(response.body.error, path).toMatch(/path|id|escape|decode|encod/i);
    }
  });

  it('leaves the master serving, with nothing created or canceled', async () => {
    await expectUnharmed(master, [fixture], fixture);
  });
});

describe('bad query values', () => {
  const console0 = '/v1/build/{fixture}/subjob/0/atom/0/console';
  /** [path, the error it must get] */
  const CASES: readonly [string, RegExp][] = [
    ['/v2/builds?offset=abc', /offset must be an integer/],
    ['/v2/builds?limit=1.5', /limit must be an integer/],
    ['/v2/builds?limit=', /limit must be an integer/],
    ['/v2/builds?limit=%00', /limit must be an integer/],
    ['/v2/builds?limit=%ZZ', /limit must be an integer/],
    ['/v2/builds?offset=0x10', /offset must be an integer/],
    ['/v2/builds?offset=1e3', /offset must be an integer/],
    ['/v2/builds?limit=1&limit=2', /limit must be given once/],
    ['/v2/builds?offset=1&offset=', /offset must be given once/],
    ['/v2/workers?limit=abc', /limit must be an integer/],
    ['/v2/slaves?offset=x', /offset must be an integer/],
    ['/v2/queue?offset=1.0', /offset must be an integer/],
    ['/v2/builds/{fixture}/subjobs?limit=x', /limit must be an integer/],
    ['/v2/builds/{fixture}/subjobs/0/atoms?offset=--1', /offset must be an integer/],
    ['/v1/eventlog?since_id=0x10', /since_id must be an integer/],
    ['/v1/eventlog?since_id=1e3', /since_id must be an integer/],
    ['/v1/eventlog?since_id=-5', /since_id must be a non-negative integer/],
    ['/v1/eventlog?since_id=1&since_id=2', /since_id must be given once/],
    ['/v1/eventlog?since_id=1&since_timestamp=1', /not both/],
    ['/v1/eventlog?since_timestamp=yesterday', /since_timestamp must be a number/],
    ['/v1/eventlog?since_timestamp=Infinity', /since_timestamp must be a number/],
    ['/v1/eventlog?since_timestamp=NaN', /since_timestamp must be a number/],
    ['/v1/eventlog?since_timestamp=', /since_timestamp must be a number/],
    [`${console0}?max_lines=ten`, /max_lines must be an integer/],
    [`${console0}?max_lines=%20`, /max_lines must be an integer/],
    [`${console0}?max_lines=0`, /max_lines must be a positive integer/],
    [`${console0}?max_lines=-5`, /max_lines must be a positive integer/],
    [`${console0}?offset_line=%00`, /offset_line must be an integer/],
    [`${console0}?offset_line=-3`, /offset_line must be a non-negative integer/],
    [`${console0}?offset_line=1`, /past the end/],
    [`${console0}?max_lines=99999999999999999999&offset_line=99999999999999999999`, /past the end/],
    [`${console0}?max_lines=1&max_lines=2`, /max_lines must be given once/],
  ];

  it.each(CASES)('GET %s: 400 naming the parameter', async (path, expected) => {
    const response = await api(master, 'GET', at(path));
    expectFailure(response, 400);
    expect(response.body.error).toMatch(expected);
  });

  it('takes extreme but well-formed values', async () => {
    for (const path of [
      '/v2/builds?offset=-99999999999999999999&limit=99999999999999999999', '/v1/eventlog?since_timestamp=-1e300',
      '/v1/eventlog?since_id=99999999999999999999', `${console0}?max_lines=99999999999999999999&offset_line=0`,
    ]) {
      const response = await api(master, 'GET', at(path));
      expect(response.status, `${path}: ${response.text}`).toBe(200);
    }
    // The v2 list names the parameters it knows (SPEC §11): a bracketed one is refused by name, not ignored.
    const bracketed = await api(master, 'GET', at('/v2/builds?offset[]=1'));
    expect(bracketed.status, bracketed.text).toBe(400);
    expect(bracketed.text).toContain('offset[]');
  });

  it('leaves the master serving, with nothing created or canceled', async () => {
    await expectUnharmed(master, [fixture], fixture);
  });
});

describe('wrong methods', () => {
  const buildBody = () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB });
  /** [method, path, Allow]: each carries a validly signed body where it may have one; none may act. */
  const CASES: readonly [string, string, string][] = [
    ['PATCH', '/v1/build', 'GET, POST'],
    ['PUT', '/v1/build', 'GET, POST'],
    ['DELETE', '/v1/build', 'GET, POST'],
    ['PROPFIND', '/v1/build', 'GET, POST'],
    ['OPTIONS', '/v1/build', 'GET, POST'],
    ['PUT', '/v2/builds', 'GET, POST'],
    ['POST', '/v1/build/{fixture}', 'GET, PUT'],
    ['DELETE', '/v1/build/{fixture}', 'GET, PUT'],
    ['PATCH', '/v2/builds/{fixture}', 'GET, PUT'],
    ['POST', '/v1/build/{fixture}/result', 'GET'],
    ['PUT', '/v1/build/{fixture}/artifacts.tar.gz', 'GET'],
    ['POST', '/v1/build/{fixture}/subjob/0/atom/0/console', 'GET'],
    ['DELETE', '/', 'GET'],
    ['POST', '/v1/version', 'GET'],
    ['POST', '/v1/queue', 'GET'],
    ['POST', '/v1/eventlog', 'GET'],
    ['PUT', '/v1/metrics', 'GET'],
    ['GET', '/v1/worker/shutdown', 'POST'],
    ['PUT', '/v1/worker/1/shutdown', 'POST'],
    ['DELETE', '/v1/slave/1', 'GET, PUT'],
  ];

  it.each(CASES)('%s %s: 405 with Allow', async (method, path, allow) => {
    const response = await api(master, method, at(path), method === 'GET' ? {} : { raw: buildBody() });
    expectFailure(response, 405);
    expect(response.headers.get('allow')).toBe(allow);
  });

  it('an unknown method token: 4xx from the HTTP parser, never a 5xx', async () => {
    const { status } = await rawExchange(master, (socket) => socket.write('BREW /v1/build HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n'));
    expect(status).toBeGreaterThanOrEqual(400);
    expect(status).toBeLessThan(500);
  });

  it('leaves the master serving, with nothing created or canceled', async () => {
    await expectUnharmed(master, [fixture], fixture);
  });
});

// ---------------------------------------------------------------------------------------------------------

interface RawAnswer {
  readonly answer: string;
  /** The status of the first response, or null when the server sent none. */
  readonly status: number | null;
  readonly closedAfterMs: number;
  readonly isClosedByServer: boolean;
}

/**
 * A raw socket to the master, for what fetch will not send. Resolves when the socket closes: closed by the
 * server, by us once a response head has arrived (isDoneAtAnswer), or by us after giveUpAfterMs.
 */
function rawExchange(target: { url: string }, start: (socket: Socket) => void, options: { isDoneAtAnswer?: boolean; giveUpAfterMs?: number } = {}): Promise<RawAnswer> {
  const url = new URL(target.url);
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect(Number(url.port), url.hostname);
    let answer = '';
    let isClosedByServer = false;
    const giveUp = setTimeout(() => socket.destroy(), options.giveUpAfterMs ?? 10_000);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      answer += chunk;
      if (options.isDoneAtAnswer === true && answer.includes('\r\n\r\n')) socket.destroy();
    });
    socket.on('end', () => {
      isClosedByServer = true;
    });
    socket.on('error', () => {
      // A reset from the server is a close by the server.
      isClosedByServer = true;
    });
    socket.on('close', () => {
      clearTimeout(giveUp);
      const match = /^HTTP\/1\.[01] (\d{3}) /.exec(answer);
      resolve({ answer, status: match ? Number(match[1]) : null, closedAfterMs: Date.now() - started, isClosedByServer });
    });
    socket.on('connect', () => start(socket));
  });
}

/** Writes text one character every intervalMs until the socket closes. */
function trickle(socket: Socket, text: string, intervalMs: number): void {
  let at = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || at >= text.length) return;
    socket.write(text[at++]!);
  }, intervalMs);
  socket.on('close', () => clearInterval(timer));
}

describe('malformed HTTP framing', () => {
  /** A complete, validly signed build request: if any of these were split into two requests, a build would appear. */
  const smuggled = () => {
    const body = JSON.stringify({ type: 'directory', project_directory: project, config: JOB });
    return `POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${DIGEST}: ${digest(master.secret, body)}\r\n`
      + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  };
  /** [what, the bytes, the status Node answers with] */
  const CASES: readonly [string, () => string, number][] = [
    ['Content-Length and Transfer-Encoding (CL.TE smuggling)', () => `POST /v1/queue HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled()}`, 400],
    ['Transfer-Encoding and Content-Length (TE.CL smuggling)', () => {
      const inner = smuggled();
      return `POST /v1/queue HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n${Buffer.byteLength(inner).toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
    }, 400],
    ['an obfuscated Transfer-Encoding', () => `POST /v1/queue HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${smuggled()}`, 400],
    ['Transfer-Encoding: chunked, identity', () => `POST /v1/queue HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${smuggled()}`, 400],
    ['two different Content-Lengths', () => `POST /v1/queue HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 10\r\n\r\n${smuggled()}`, 400],
    ['a negative Content-Length', () => 'POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n', 400],
    ['a hexadecimal Content-Length', () => 'POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n', 400],
    ['a chunk size that is not hex', () => 'POST /v1/build HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n', 400],
    ['a folded header line', () => 'GET /v1/build HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n', 400],
    ['a NUL in a header', () => 'GET /v1/build HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\n\r\n', 400],
    ['a space in the path', () => 'GET /v1/build /1 HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['an unknown HTTP version', () => 'GET /v1/build HTTP/9.9\r\nHost: x\r\n\r\n', 400],
    ['bare LF line ends', () => 'GET /v1/build HTTP/1.1\nHost: x\n\n', 400],
    ['a 20 kB header', () => `GET /v1/build HTTP/1.1\r\nHost: x\r\nX-A: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    ['3000 headers', () => `GET /v1/build HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 3000 }, (_, i) => `X-${i}: a\r\n`).join('')}\r\n`, 431],
  ];

  it.each(CASES)('%s: %i, one answer, connection closed', async (_what, bytes, status) => {
    const answer = await rawExchange(master, (socket) => socket.write(bytes()), { giveUpAfterMs: 5_000 });
    expect(answer.status, answer.answer.slice(0, 200)).toBe(status);
    expect(answer.answer.match(/HTTP\/1\.1 \d{3} /g)).toHaveLength(1);
    expect(answer.isClosedByServer).toBe(true);
  });

  it('leaves the master serving, with nothing created (no smuggled build)', async () => {
    await expectUnharmed(master, [fixture], fixture);
  });
});

describe('slow clients', () => {
  let slow: TestMaster;
  let waiting: number;
  beforeAll(async () => {
    slow = await startTestMaster({ conf: TIMEOUTS });
    waiting = await waitingBuild(slow);
  });
  const { httpHeadersTimeoutMs: headersMs, httpRequestTimeoutMs: requestMs } = TIMEOUTS;
  const cancel = '{"status": "canceled"}';
  /** [what, what the client does, the timeout that must cut it off] */
  const CASES: readonly [string, (socket: Socket) => void, number][] = [
    ['a connection that sends nothing', () => undefined, headersMs],
    ['a request line, then nothing', (socket) => socket.write('POST /v1/build HTTP/1.1\r\nHost: x\r\n'), headersMs],
    ['headers trickled a byte every 50 ms (slowloris)', (socket) => trickle(socket, `GET /v1/build HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(200)}\r\n\r\n`, 50), headersMs],
    ['a body that stalls half way', (socket) => {
      socket.write('POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"type": "dir');
    }, requestMs],
    ['headers announcing a body that never comes', (socket) => socket.write('POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n'), requestMs],
    ['a body trickled a byte every 100 ms', (socket) => {
      socket.write('POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n');
      trickle(socket, ' '.repeat(1000), 100);
    }, requestMs],
    ['a chunked body that stalls after one chunk', (socket) => socket.write('POST /v1/build HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"typ\r\n'), requestMs],
    ['a declared 10 GB body that stalls after 3000 bytes', (socket) => {
      socket.write(`POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n${' '.repeat(3000)}`);
    }, requestMs],
    ['a validly signed cancel whose body stalls', (socket) => {
      const head = `PUT /v1/build/${waiting} HTTP/1.1\r\nHost: x\r\n${DIGEST}: ${digest(slow.secret, cancel)}\r\nContent-Length: ${cancel.length}\r\n\r\n`;
      socket.write(`${head}${cancel.slice(0, 10)}`);
    }, requestMs],
  ];

  describe.concurrent('each is cut off', () => {
    it.for(CASES)('%s: 408 or closed, within 3× the timeout', async ([, act, timeoutMs], { expect }) => {
      const { status, closedAfterMs, isClosedByServer, answer } = await rawExchange(slow, act);
      expect(isClosedByServer, answer).toBe(true);
      expect([408, 413, null], answer.slice(0, 200)).toContain(status);
      // Node checks its timeouts every connectionsCheckingInterval: never early, at most an interval late.
      expect(closedAfterMs).toBeGreaterThanOrEqual(timeoutMs * 0.9);
      expect(closedAfterMs).toBeLessThan(3 * timeoutMs);
    });

    it('serves others while 50 slow clients hang on', async ({ expect }) => {
      const other = await startTestMaster({ conf: TIMEOUTS });
      const hanging = Array.from({ length: 50 }, () => rawExchange(other, (socket) => socket.write('POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n')));
      expect((await api(other, 'GET', '/v1/queue')).status).toBe(200);
      const id = await postBuild(other, { type: 'directory', project_directory: project, config: JOB });
      expect((await api(other, 'GET', '/v1/build')).body.builds.map((build: { id: number }) => build.id)).toEqual([id]);
      const answers = await Promise.all(hanging);
      expect(answers.every((answer) => answer.isClosedByServer && answer.closedAfterMs < 3 * requestMs)).toBe(true);
    });
  });

  it('leaves the master serving, with nothing created or canceled', async () => {
    await expectUnharmed(slow, [waiting], waiting);
  });
});
