/**
 * Security suite: input the HTTP API must refuse, driven over loopback against a real master. Malformed,
 * oversized, deeply nested and wrongly typed JSON, unknown keys, bad ids in paths, bad query values, and
 * slow or stalled clients: each gets a 4xx (or is cut off by the server's timeouts) that says what is
 * wrong, never a 5xx, nothing is created, and the master goes on serving.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { expectFailure } from '../support/http-expect.ts';

afterEach(cleanupAll);

const JOB = { commands: ['true'], atomizers: [{ X: 'seq 1 3' }] };

async function buildIds(master: TestMaster): Promise<number[]> {
  const response = await api(master, 'GET', '/v1/build');
  expect(response.status).toBe(200);
  return (response.body.builds as { id: number }[]).map((build) => build.id);
}

describe('paths', () => {
  it('answers odd ids and paths with 4xx, never a 5xx', async () => {
    const master = await startTestMaster();
    const paths = [
      '/v1/build/abc', '/v1/build/-1', '/v1/build/1.5', '/v1/build/0x10', '/v1/build/1e3', '/v1/build/%20',
      '/v1/build/99999999999999999999999', '/v1/build/%ZZ', '/v1/build/1%2F2', '/v1/build/abc/subjob',
      '/v1/build/abc/subjob/0/atom/0/console', '/v1/worker/abc', '/v1/worker/-3', '/v1/slave/%00',
      '/v2/builds/abc', '/v1/build/1/artifacts.tar.gz/..', '/v2/builds?offset=1&offset=2', '/v1/eventlog?since_id=1&since_id=2',
    ];
    for (const path of paths) {
      const response = await api(master, 'GET', path);
      expect(response.status, `GET ${path}: ${response.text}`).toBeGreaterThanOrEqual(400);
      expect(response.status, `GET ${path}: ${response.text}`).toBeLessThan(500);
      expect(response.body?.STATUS, `GET ${path}`).toBe('FAILURE');
    }
    expectFailure(await api(master, 'GET', '/v1/build/abc'), 400);
    expectFailure(await api(master, 'GET', '/v1/build/12'), 404, 'Invalid build id: 12.');
  });
});

describe('bodies', () => {
  it('refuses a body over max_body_bytes with 413, and takes one under it', async () => {
    const master = await startTestMaster({ conf: { maxBodyBytes: 2048 } });
    const big = { type: 'directory', project_directory: tempDir(), config: { ...JOB, commands: [`echo ${'x'.repeat(3000)}`] } };
    expectFailure(await api(master, 'POST', '/v1/build', { json: big }), 413);
    expect(await buildIds(master)).toEqual([]);
    expectFailure(await api(master, 'PUT', '/v1/build/1', { raw: JSON.stringify({ status: 'canceled', pad: 'x'.repeat(3000) }) }), 413);
    expectFailure(await api(master, 'POST', '/v1/worker/shutdown', { raw: JSON.stringify({ workers: Array(2000).fill(1) }) }), 413);

    const small = await api(master, 'POST', '/v1/build', { json: { type: 'directory', project_directory: tempDir(), config: JOB } });
    expect(small.status).toBe(202);
  });

  it('names what is wrong with a refused request, and creates nothing', async () => {
    const master = await startTestMaster();
    const dir = tempDir();
    const post = (raw: string) => api(master, 'POST', '/v1/build', { raw });
    const json = (value: unknown) => post(JSON.stringify(value));

    expectFailure(await post('{"type": "directory", '), 400);
    expectFailure(await post('not json at all'), 400);
    expectFailure(await post('{"type": "directory"} trailing'), 400);

    const unknown = await json({ type: 'directory', project_directory: dir, config: JOB, colour: 'red' });
    expectFailure(unknown, 400);
    expect(unknown.body.error).toContain('colour');
    // Unknown keys are named even when the rest is wrong too.
    expect((await json({ bogus_key: 1 })).body.error).toContain('bogus_key');

    for (const body of [{}, { project_directory: dir }, { type: 'svn', project_directory: dir }, { type: 5, project_directory: dir },
      { type: null, project_directory: dir }, { type: '', project_directory: dir }, { type: ['directory'], project_directory: dir }]) {
      expectFailure(await json(body), 400, 'Invalid build request type.');
    }
    expectFailure(await json({ type: 'directory' }), 400, 'Missing required parameter. Required parameters: [project_directory]');
    expectFailure(await json({ type: 'directory', project_directory: null }), 400, 'Missing required parameter. Required parameters: [project_directory]');
    expectFailure(await json({ type: 'git' }), 400, 'Missing required parameter. Required parameters: [url]');

    const wronglyTyped: [Record<string, unknown>, string][] = [
      [{ project_directory: 5 }, 'project_directory'],
      [{ project_directory: ['/tmp'] }, 'project_directory'],
      [{ project_directory: 'relative/path' }, 'project_directory'],
      [{ job_name: 5 }, 'job_name'],
      [{ job_name: { a: 1 } }, 'job_name'],
      [{ priority: 'high' }, 'priority'],
      [{ priority: 1.5 }, 'priority'],
      [{ priority: true }, 'priority'],
      [{ config: 'commands: [true]' }, 'config'],
      [{ config: [1, 2] }, 'config'],
      [{ config: null }, 'config'],
      [{ atoms_override: 'export X="1";' }, 'atoms_override'],
      [{ atoms_override: [1, 2] }, 'atoms_override'],
      [{ atoms_override: { a: 1 } }, 'atoms_override'],
      [{ remote_files: ['https://example.com/x'] }, 'remote_files'],
      [{ remote_files: { 'a.txt': 5 } }, 'remote_files'],
      [{ remote_files: { 'a.txt': 'ftp://example.com/x' } }, 'remote_files'],
      [{ remote_files: { '../escape': 'https://example.com/x' } }, 'remote_files'],
      [{ remote_files: 'https://example.com/x' }, 'remote_files'],
    ];
    for (const [fields, name] of wronglyTyped) {
      const response = await json({ type: 'directory', project_directory: dir, config: JOB, ...fields });
      expectFailure(response, 400);
      expect(response.body.error, JSON.stringify(fields)).toContain(name);
    }
    expect(await buildIds(master)).toEqual([]);
  });

  it('answers every malformed body with a 4xx, never a 5xx, and creates nothing', async () => {
    const master = await startTestMaster();
    const dir = JSON.stringify(tempDir());
    const deep = (open: string, close: string, inner = '1') => `${open.repeat(10_000)}${inner}${close.repeat(10_000)}`;
    const bodies = [
      '[]', 'null', '42', '-1.5e308', '"directory"', 'true', '[{"type": "directory"}]', '{"type": "directory", "project_directory": 1e999}',
      `{"type": "directory", "project_directory": ${dir}, "priority": 1e400}`,
      `{"type": "directory", "project_directory": ${dir}, "priority": 99999999999999999999}`,
      `{"type": "directory", "project_directory": ${dir}, "atoms_override": [[[["x"]]]]}`,
      `{"type": "directory", "project_directory": ${dir}, "remote_files": {"a": {"b": {"c": []}}}}`,
      `{"type": "directory", "project_directory": {"$gt": ""}}`,
      `{"__proto__": {"type": "directory"}, "project_directory": ${dir}}`,
      `{"constructor": {"prototype": {"x": 1}}}`,
      deep('[', ']'),
      deep('{"a":', '}'),
      `{"type": "directory", "project_directory": ${dir}, "junk": ${deep('{"a":', '}')}}`,
      `{"type": "directory", "project_directory": ${dir}, "atoms_override": ${deep('[', ']', '"x"')}}`,
      `{"type": "directory", "project_directory": ${dir}, "remote_files": {"f": ${deep('[', ']')}}}`,
      '\u0000\u0001\u0002', '{"type": "directory", "type": "directory"', '',
    ];
    for (const raw of bodies) {
      const response = await api(master, 'POST', '/v1/build', { raw });
      const shown = raw.length > 120 ? `${raw.slice(0, 120)}…` : raw;
      expect(response.status, `${shown} ⇒ ${response.text.slice(0, 200)}`).toBeGreaterThanOrEqual(400);
      expect(response.status, `${shown} ⇒ ${response.text.slice(0, 200)}`).toBeLessThan(500);
      expect(response.body?.STATUS, shown).toBe('FAILURE');
    }
    expect(await buildIds(master)).toEqual([]);

    // The other bodies that take JSON hold up as well.
    const deepPut = [`{"status": ${deep('[', ']', '"canceled"')}}`, `{"status": "canceled", "x": ${deep('{"a":', '}')}}`, deep('[', ']')];
    for (const raw of deepPut) expectFailure(await api(master, 'PUT', '/v1/build/1', { raw }), 400);
    const deepShutdown = [`{"workers": ${deep('[', ']')}}`, `{"workers": [${deep('{"a":', '}')}]}`, `{"shutdown_all": ${deep('[', ']')}}`];
    for (const raw of deepShutdown) expectFailure(await api(master, 'POST', '/v1/worker/shutdown', { raw }), 400);

    // A NUL in a path is not a folder that exists: refused now or an ERROR build later, never a 5xx.
    const nul = await api(master, 'POST', '/v1/build', { raw: '{"type": "directory", "project_directory": "/tmp\\u0000/x", "config": {}}' });
    expect(nul.status, nul.text).toBeLessThan(500);
    if (nul.status === 202) expect((await waitForBuild(master, nul.body.build_id)).status).toBe('ERROR');
    // Still serving.
    expect((await api(master, 'GET', '/v1')).status).toBe(200);
  });

  it('refuses a deeply nested inline config with a 400, or reports it through the build; never a 5xx', async () => {
    const master = await startTestMaster();
    const raw = `{"type": "directory", "project_directory": ${JSON.stringify(tempDir())}, "config": ${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}`;
    const response = await api(master, 'POST', '/v1/build', { raw });
    // SPEC §1 allows either a 400 at the edge (a nesting limit) or a bad job config reported as ERROR (§3).
    expect([202, 400], `${response.status} ${response.text.slice(0, 300)}`).toContain(response.status);
    if (response.status === 400) {
      expectFailure(response, 400);
      expect(await buildIds(master)).toEqual([]);
    } else {
      const build = await waitForBuild(master, response.body.build_id);
      expect(build.status).toBe('ERROR');
      expect(build.error_message).toEqual(expect.any(String));
    }
    expect((await api(master, 'GET', '/v1/build')).status).toBe(200);
  });
});

describe('query values', () => {
  it.each([
    ['/v2/builds?offset=abc', /offset must be an integer/],
    ['/v2/builds?limit=1.5', /limit must be an integer/],
    ['/v2/builds?limit=', /limit must be an integer/],
    ['/v2/builds?limit=1&limit=2', /limit must be given once/],
    ['/v2/builds?offset=1&offset=', /offset must be given once/],
    ['/v1/eventlog?since_id=0x10', /since_id must be an integer/],
    ['/v1/eventlog?since_id=1e3', /since_id must be an integer/],
    ['/v1/eventlog?since_timestamp=yesterday', /since_timestamp must be a number/],
    ['/v1/eventlog?since_timestamp=Infinity', /since_timestamp must be a number/],
    ['/v1/eventlog?since_timestamp=', /since_timestamp must be a number/],
    ['/v1/build/1/subjob/0/atom/0/console?max_lines=ten', /max_lines must be an integer/],
    ['/v1/build/1/subjob/0/atom/0/console?offset_line=%00', /offset_line must be an integer/],
    ['/v1/build/1/subjob/0/atom/0/console?max_lines=1&max_lines=2', /max_lines must be given once/],
  ])('GET %s: 400 naming the parameter', async (path, expected) => {
    const master = await startTestMaster();
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    await waitForBuild(master, id, (build) => build.num_atoms === 3);
    const response = await api(master, 'GET', path);
    expectFailure(response, 400);
    expect(response.body.error).toMatch(expected);
  });

  it('takes extreme but well-formed values without a 5xx', async () => {
    const master = await startTestMaster();
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    await waitForBuild(master, id, (build) => build.num_atoms === 3);
    for (const path of [
      '/v2/builds?offset=-99999999999999999999&limit=99999999999999999999', '/v1/eventlog?since_id=-5',
      '/v1/eventlog?since_timestamp=-1e300', `/v1/build/${id}/subjob/0/atom/0/console?max_lines=-5`,
      `/v1/build/${id}/subjob/0/atom/0/console?max_lines=99999999999999999999&offset_line=99999999999999999999`,
      `/v1/build/${id}/subjob/0/atom/0/console?offset_line=-3`,
    ]) {
      const response = await api(master, 'GET', path);
      expect(response.status, `${path}: ${response.text}`).toBeLessThan(500);
    }
  });
});

/** A raw socket to the master; resolves with what it answered and when the socket closed. */
function rawRequest(master: TestMaster, send: (socket: Socket) => void): Promise<{ answer: string; closedAfterMs: number }> {
  const url = new URL(master.url);
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect(Number(url.port), url.hostname);
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      answer += chunk;
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve({ answer, closedAfterMs: Date.now() - started }));
    socket.on('connect', () => send(socket));
  });
}

describe('slow clients', () => {
  const TIMEOUTS = { httpRequestTimeoutMs: 1_500, httpHeadersTimeoutMs: 1_000 };

  it('a body that stalls half way: cut off with 408 after http_request_timeout_seconds; nothing created', async () => {
    const master = await startTestMaster({ conf: TIMEOUTS });
    const { answer, closedAfterMs } = await rawRequest(master, (socket) => {
      socket.write(`POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"type": "dir`);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(closedAfterMs).toBeGreaterThanOrEqual(1_000);
    expect(closedAfterMs).toBeLessThan(3 * TIMEOUTS.httpRequestTimeoutMs);
    expect(await buildIds(master)).toEqual([]);
  });

  it('headers trickled a byte at a time (slowloris): cut off after http_headers_timeout_seconds', async () => {
    const master = await startTestMaster({ conf: TIMEOUTS });
    let timer: NodeJS.Timeout | undefined;
    const { answer, closedAfterMs } = await rawRequest(master, (socket) => {
      const request = `GET /v1/build HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(200)}\r\n\r\n`;
      let at = 0;
      timer = setInterval(() => {
        if (socket.destroyed || at >= request.length) return;
        socket.write(request[at++]!);
      }, 50);
    });
    clearInterval(timer);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(closedAfterMs).toBeLessThan(3 * TIMEOUTS.httpRequestTimeoutMs);
  });

  it('serves others while slow clients hang on', async () => {
    const master = await startTestMaster({ conf: TIMEOUTS });
    const hanging = Array.from({ length: 50 }, () => rawRequest(master, (socket) => socket.write('POST /v1/build HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n')));
    expect((await api(master, 'GET', '/v1/queue')).status).toBe(200);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    expect(await buildIds(master)).toEqual([id]);
    await Promise.all(hanging);
  });
});
