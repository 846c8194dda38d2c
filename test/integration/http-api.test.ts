/**
 * The master's HTTP API as SPEC §1–§2 describe it, driven over loopback: conventions (headers, session,
 * routing, errors), POST /v1/build validation, authentication, the three trees and pagination, the queue
 * and PUT /v1/build/:id. Builds here need no worker: without one, a prepared build waits in PREPARING.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { signRequest } from '../../shared/auth.ts';
import { api, cleanupAll, digest, postBuild, startTestMaster, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { NOT_AUTHENTICATED, UUID, expectFailure, expectSessionHeaders } from '../support/http-expect.ts';

afterEach(cleanupAll);

const DIGEST = 'ClusterRunner-Message-Authentication-Digest';
const JOB = { commands: ['true'], atomizers: [{ X: 'seq 1 3' }] };

/** A build that prepares and then waits for a worker that never comes. */
async function waitingBuild(master: TestMaster): Promise<number> {
  const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
  await waitForBuild(master, id, (b) => b.status === 'PREPARING' && b.num_atoms === 3);
  return id;
}

async function buildIds(master: TestMaster): Promise<number[]> {
  const response = await api(master, 'GET', '/v1/build');
  expect(response.status).toBe(200);
  return (response.body.builds as { id: number }[]).map((build) => build.id);
}

describe('HTTP conventions', () => {
  it('puts Api-Version and the same Session-Id on every response, errors included', async () => {
    const master = await startTestMaster();
    const sessionId = master.server.sessionId;
    expect(sessionId).toMatch(UUID);
    const id = await waitingBuild(master);
    const responses = [
      await api(master, 'GET', '/'),
      await api(master, 'GET', '/v1'),
      await api(master, 'GET', '/v1/version'),
      await api(master, 'GET', '/v1/metrics'),
      await api(master, 'GET', `/v1/build/${id}`),
      await api(master, 'GET', `/v1/build/${id}/artifacts.tar.gz`), // 202, not ready
      await api(master, 'GET', `/v1/build/${id}/result`), // 302
      await api(master, 'GET', '/v1/build/77'), // 404
      await api(master, 'GET', '/no/such/route'), // 404
      await api(master, 'DELETE', '/v1/build'), // 405
      await api(master, 'POST', '/v1/build', { raw: '{' }), // 400
      await api(master, 'POST', '/v1/build', { json: {}, sign: false }), // 401
      await api(master, 'GET', '/v1', { headers: { 'Expected-Session-Id': 'stale' } }), // 412
    ];
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 202, 302, 404, 404, 405, 400, 401, 412]);
    for (const response of responses) expectSessionHeaders(response, sessionId);
    expect(responses[0]!.headers.get('api-version')).toBe(String(responses[2]!.body.api_version));
  });

  it('answers 412 to a request expecting another session, and acts on the right one', async () => {
    const master = await startTestMaster();
    const sessionId = master.server.sessionId;
    const matching = await api(master, 'GET', '/v1/build', { headers: { 'Expected-Session-Id': sessionId } });
    expect(matching.status).toBe(200);

    const other = '00000000-0000-4000-8000-000000000000';
    expectFailure(await api(master, 'GET', '/v1/build', { headers: { 'Expected-Session-Id': other } }), 412);
    const refused = await api(master, 'POST', '/v1/build', {
      json: { type: 'directory', project_directory: tempDir(), config: JOB }, headers: { 'Expected-Session-Id': other },
    });
    expectFailure(refused, 412);
    expect(await buildIds(master)).toEqual([]);

    const accepted = await api(master, 'POST', '/v1/build', {
      json: { type: 'directory', project_directory: tempDir(), config: JOB }, headers: { 'Expected-Session-Id': sessionId },
    });
    expect(accepted.status).toBe(202);
  });

  it('serves the master status on / and /v1, and the version', async () => {
    const master = await startTestMaster();
    for (const path of ['/', '/v1']) {
      const response = await api(master, 'GET', path);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
      expect(response.body.master).toEqual({ status: 'Master service is up.', workers: [] });
      expect(response.body.child_routes).toEqual(expect.any(Object));
    }
    for (const path of ['/v1/version', '/version']) {
      const response = await api(master, 'GET', path);
      expect(response.status).toBe(200);
      // startTestMaster passes 'test' as the package version.
      expect(response.body).toMatchObject({ version: 'test', api_version: 1 });
    }
  });

  it('answers unknown routes with a JSON 404', async () => {
    const master = await startTestMaster();
    for (const path of ['/v1/nope', '/nope', '/v3/build', '/v1/builds', '/v2/build', '/v1/build/1/nonsense', '/v1/worker/1/nonsense', '/v1/eventlog/x']) {
      expectFailure(await api(master, 'GET', path), 404);
    }
    expectFailure(await api(master, 'POST', '/v1/nope', { json: {} }), 404);
  });

  it('answers a wrong method on a known path with a JSON 405, never a 500', async () => {
    const master = await startTestMaster();
    const id = await waitingBuild(master);
    const cases: [string, string][] = [
      ['DELETE', '/v1/build'], ['PUT', '/v1/build'], ['PATCH', '/v1/build'],
      ['POST', '/v1/version'], ['PUT', '/v1/worker'], ['POST', '/v1/worker'], ['DELETE', '/v1/slave'],
      ['POST', '/v1'], ['DELETE', '/'], ['POST', '/v1/queue'], ['POST', '/v1/eventlog'], ['PUT', '/v1/metrics'],
      ['DELETE', `/v1/build/${id}`], ['POST', `/v1/build/${id}`], ['POST', `/v1/build/${id}/subjob`],
      ['PUT', `/v1/build/${id}/subjob/0`], ['POST', `/v1/build/${id}/subjob/0/atom/0/console`],
      ['POST', `/v1/build/${id}/artifacts.tar.gz`], ['DELETE', `/v1/build/${id}/result`],
      ['GET', '/v1/worker/shutdown'], ['GET', '/v1/worker/1/shutdown'],
      ['DELETE', '/build'], ['DELETE', '/v2/builds'], ['PUT', '/v2/workers'],
    ];
    for (const [method, path] of cases) {
      const response = await api(master, method, path, method === 'GET' ? {} : { json: {} });
      expect(`${method} ${path} ⇒ ${response.status}`).toBe(`${method} ${path} ⇒ 405`);
      expectFailure(response, 405);
    }
  });

  it('names the method and the path as the client sent it in a 405', async () => {
    const master = await startTestMaster();
    for (const path of ['/v1/build', '/v2/builds', '/v1/worker/shutdown', '/v1/version']) {
      const response = await api(master, 'DELETE', path);
      expectFailure(response, 405);
      expect(response.body.error, path).toContain('DELETE');
      expect(response.body.error, path).toContain(path);
    }
  });

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

describe('POST /v1/build', () => {
  it('answers 202 with the new build id, ids counting up', async () => {
    const master = await startTestMaster();
    const first = await api(master, 'POST', '/v1/build', { json: { type: 'directory', project_directory: tempDir(), config: JOB } });
    expect(first.status).toBe(202);
    expect(first.body).toEqual({ build_id: 1, STATUS: 'SUCCESS' });
    // type is case-insensitive.
    const second = await api(master, 'POST', '/v1/build', { json: { type: 'DIRECTORY', project_directory: tempDir(), config: JOB } });
    expect(second.status).toBe(202);
    expect(second.body).toEqual({ build_id: 2, STATUS: 'SUCCESS' });
    const third = await api(master, 'POST', '/build', { json: { type: 'Directory', project_directory: tempDir(), config: JOB } });
    expect(third.body).toEqual({ build_id: 3, STATUS: 'SUCCESS' });
    expect(await buildIds(master)).toEqual([1, 2, 3]);
  });

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

describe('authentication', () => {
  /** Digests that must all be refused for a body, keyed by what is wrong with them. */
  function badDigests(secret: string, body: string): Record<string, string | undefined> {
    const right = digest(secret, body);
    return {
      missing: undefined,
      empty: '',
      'of another body': digest(secret, `${body} `),
      'with another secret': digest(`${secret}x`, body),
      truncated: right.slice(0, 64),
      'one character short': right.slice(0, -1),
      'one character long': `${right}0`,
      'non-hex': 'z'.repeat(128),
      'base64 of the right bytes': Buffer.from(right, 'hex').toString('base64'),
      'the secret itself': secret,
    };
  }

  async function send(master: TestMaster, method: string, path: string, body: string, value: string | undefined) {
    return api(master, method, path, { raw: body, sign: false, headers: value === undefined ? {} : { [DIGEST]: value } });
  }

  it('refuses POST /v1/build with a missing or wrong digest, and takes upper-case hex', async () => {
    const master = await startTestMaster();
    const body = JSON.stringify({ type: 'directory', project_directory: tempDir(), config: JOB });
    for (const [what, value] of Object.entries(badDigests(master.secret, body))) {
      const response = await send(master, 'POST', '/v1/build', body, value);
      expect(response.status, what).toBe(401);
      expectFailure(response, 401, NOT_AUTHENTICATED);
    }
    expect(await buildIds(master)).toEqual([]);
    // Hex is case-insensitive (shared/auth.ts lower-cases what it receives), and so is the header name.
    const upper = await api(master, 'POST', '/v1/build', { raw: body, sign: false, headers: { [DIGEST.toUpperCase()]: digest(master.secret, body).toUpperCase() } });
    expect(upper.status).toBe(202);
    expect(await buildIds(master)).toEqual([1]);
  });

  it('refuses PUT /v1/build/:id with a missing or wrong digest, leaving the build alone', async () => {
    const master = await startTestMaster();
    const id = await waitingBuild(master);
    const body = JSON.stringify({ status: 'canceled' });
    for (const [what, value] of Object.entries(badDigests(master.secret, body))) {
      const response = await send(master, 'PUT', `/v1/build/${id}`, body, value);
      expect(response.status, what).toBe(401);
      expectFailure(response, 401, NOT_AUTHENTICATED);
    }
    // Authentication comes before the id is looked up: nothing is told about builds to a stranger.
    expectFailure(await send(master, 'PUT', '/v1/build/999', body, undefined), 401, NOT_AUTHENTICATED);
    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build.status).toBe('PREPARING');
    const upper = await send(master, 'PUT', `/v1/build/${id}`, body, digest(master.secret, body).toUpperCase());
    expect(upper.status).toBe(200);
    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build.status).toBe('CANCELED');
  });

  it('refuses worker shutdown with a missing or wrong digest', async () => {
    const master = await startTestMaster();
    const body = JSON.stringify({ workers: [999] });
    for (const [what, value] of Object.entries(badDigests(master.secret, body))) {
      const all = await send(master, 'POST', '/v1/worker/shutdown', body, value);
      expect(all.status, what).toBe(401);
      expectFailure(all, 401, NOT_AUTHENTICATED);
      const alias = await send(master, 'POST', '/v1/slave/shutdown', body, value);
      expectFailure(alias, 401, NOT_AUTHENTICATED);
    }
    for (const [what, value] of Object.entries(badDigests(master.secret, ''))) {
      const one = await send(master, 'POST', '/v1/worker/999/shutdown', '', value);
      expect(one.status, what).toBe(401);
      expectFailure(one, 401, NOT_AUTHENTICATED);
    }
    // With the right digest the request gets as far as the unknown id.
    expectFailure(await send(master, 'POST', '/v1/worker/shutdown', body, digest(master.secret, body)), 404);
    expectFailure(await send(master, 'POST', '/v1/worker/999/shutdown', '', digest(master.secret, '')), 404);
  });

  it('accepts the signed form once: a replay, another path or another body is refused', async () => {
    const master = await startTestMaster();
    const body = JSON.stringify({ type: 'directory', project_directory: tempDir(), config: JOB });
    const headers = signRequest(master.secret, 'POST', '/v1/build', body);
    const first = await api(master, 'POST', '/v1/build', { raw: body, sign: false, headers });
    expect(first.status).toBe(202);

    const replay = await api(master, 'POST', '/v1/build', { raw: body, sign: false, headers });
    expect(replay.status).toBe(401);
    expectFailure(replay, 401);
    expect(replay.body.error.startsWith(NOT_AUTHENTICATED)).toBe(true);

    const fresh = signRequest(master.secret, 'POST', '/v1/build', body);
    expectFailure(await api(master, 'POST', '/build', { raw: body, sign: false, headers: fresh }), 401);
    const tampered = signRequest(master.secret, 'POST', '/v1/build', body);
    expectFailure(await api(master, 'POST', '/v1/build', { raw: body.replace('true', 'false'), sign: false, headers: tampered }), 401);
    const otherSecret = signRequest(`${master.secret}x`, 'POST', '/v1/build', body);
    expectFailure(await api(master, 'POST', '/v1/build', { raw: body, sign: false, headers: otherSecret }), 401);
    expect(await buildIds(master)).toEqual([1]);

    // The signed form cancels too.
    const cancel = JSON.stringify({ status: 'canceled' });
    const put = await api(master, 'PUT', '/v1/build/1', { raw: cancel, sign: false, headers: signRequest(master.secret, 'PUT', '/v1/build/1', cancel) });
    expect(put.status).toBe(200);
  });

  it('leaves reads open by default, and requires a digest on them with authenticate_reads', async () => {
    const open = await startTestMaster();
    for (const path of ['/v1/build', '/v1/worker', '/v1/queue', '/v1/eventlog']) expect((await api(open, 'GET', path)).status).toBe(200);

    const master = await startTestMaster({ conf: { authenticateReads: true } });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    for (const path of ['/v1/build', `/v1/build/${id}`, `/v1/build/${id}/subjob`, '/v1/worker', '/v1/queue', '/v1/eventlog', '/v2/builds']) {
      expectFailure(await api(master, 'GET', path), 401, NOT_AUTHENTICATED);
      expectFailure(await api(master, 'GET', path, { headers: { [DIGEST]: 'f'.repeat(128) } }), 401, NOT_AUTHENTICATED);
      const legacy = await api(master, 'GET', path, { headers: { [DIGEST]: digest(master.secret, '') } });
      expect(legacy.status, path).toBe(200);
      const signed = await api(master, 'GET', path, { sign: false, headers: signRequest(master.secret, 'GET', path) });
      expect(signed.status, path).toBe(200);
    }
  });
});

describe('the v1, unversioned and v2 trees', () => {
  it('serves the same builds under /build and /v1/build', async () => {
    const master = await startTestMaster();
    const id = await waitingBuild(master);
    const v1 = await api(master, 'GET', '/v1/build');
    const plain = await api(master, 'GET', '/build');
    expect(plain.status).toBe(200);
    expect(plain.body).toEqual(v1.body);
    expect(v1.body.builds.map((b: { id: number }) => b.id)).toEqual([id]);
    expect((await api(master, 'GET', `/build/${id}`)).body).toEqual((await api(master, 'GET', `/v1/build/${id}`)).body);
    expect((await api(master, 'GET', `/build/${id}/subjob`)).body).toEqual((await api(master, 'GET', `/v1/build/${id}/subjob`)).body);
    expect((await api(master, 'GET', '/queue')).body).toEqual((await api(master, 'GET', '/v1/queue')).body);
    expect((await api(master, 'GET', '/worker')).body).toEqual((await api(master, 'GET', '/v1/worker')).body);
    expect((await api(master, 'GET', `/v2/builds/${id}`)).body.build).toEqual(v1.body.builds[0]);
  });

  it('paginates v2 lists: default 20, at most 200, negatives clamp to 0, ascending id', async () => {
    const master = await startTestMaster();
    // Builds of a folder that does not exist end in ERROR at once: cheap to make many.
    const missing = `${tempDir()}/missing`;
    for (let i = 0; i < 205; i++) await postBuild(master, { type: 'directory', project_directory: missing, config: JOB });
    const ids = async (query: string) => {
      const response = await api(master, 'GET', `/v2/builds${query}`);
      expect(response.status, `${query}: ${response.text.slice(0, 200)}`).toBe(200);
      return (response.body.builds as { id: number }[]).map((build) => build.id);
    };
    const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);
    expect(await ids('')).toEqual(range(1, 20));
    expect(await ids('?offset=3&limit=5')).toEqual(range(4, 5));
    expect(await ids('?limit=500')).toEqual(range(1, 200));
    expect(await ids('?limit=200&offset=200')).toEqual(range(201, 5));
    expect(await ids('?offset=-5&limit=3')).toEqual(range(1, 3));
    expect(await ids('?limit=-1')).toEqual([]);
    expect(await ids('?limit=0')).toEqual([]);
    expect(await ids('?offset=205')).toEqual([]);
    expect(await ids('?offset=100000')).toEqual([]);
    for (const query of ['?limit=abc', '?limit=1.5', '?offset=x', '?offset=2.0', '?limit=', '?limit=1e2', '?offset=0x10']) {
      expectFailure(await api(master, 'GET', `/v2/builds${query}`), 400);
    }
    // v1 is not paginated.
    expect((await api(master, 'GET', '/v1/build')).body.builds).toHaveLength(205);
  });

  it('treats integers too large for a page as integers: limit clamps to 200, an offset past the end gives []', async () => {
    const master = await startTestMaster();
    const missing = `${tempDir()}/missing`;
    for (let i = 0; i < 3; i++) await postBuild(master, { type: 'directory', project_directory: missing, config: JOB });
    const huge = '1000000000000000000000';
    const cases: [string, number[]][] = [[`?limit=${huge}`, [1, 2, 3]], [`?offset=${huge}`, []], [`?offset=-${huge}&limit=1`, [1]], [`?limit=-${huge}`, []]];
    for (const [query, expected] of cases) {
      const response = await api(master, 'GET', `/v2/builds${query}`);
      expect(response.status, `${query}: ${response.text}`).toBe(200);
      expect(response.body.builds.map((build: { id: number }) => build.id), query).toEqual(expected);
    }
  });

  it('paginates v2 subjobs and atoms', async () => {
    const master = await startTestMaster();
    const id = await waitingBuild(master);
    const subjobs = await api(master, 'GET', `/v2/builds/${id}/subjobs?offset=1&limit=1`);
    expect(subjobs.status).toBe(200);
    expect(subjobs.body.subjobs.map((s: { id: number }) => s.id)).toEqual([1]);
    expect((await api(master, 'GET', `/v2/builds/${id}/subjobs`)).body.subjobs).toHaveLength(3);
    const atoms = await api(master, 'GET', `/v2/builds/${id}/subjobs/2/atoms?offset=0&limit=5`);
    expect(atoms.status).toBe(200);
    expect(atoms.body.atoms).toEqual([expect.objectContaining({ id: 0, subjob_id: 2, command_string: 'export X="3";' })]);
    expectFailure(await api(master, 'GET', `/v2/builds/${id}/subjobs?limit=x`), 400);
  });

  it('includes child_routes on GET responses of nodes with children', async () => {
    const master = await startTestMaster();
    const id = await waitingBuild(master);
    const routes = async (path: string) => {
      const response = await api(master, 'GET', path);
      expect(response.status, path).toBe(200);
      expect(response.body.child_routes, path).toEqual(expect.any(Object));
      return Object.values(response.body.child_routes as Record<string, string>);
    };
    expect(await routes('/v1')).toEqual(expect.arrayContaining(['/v1/build', '/v1/worker']));
    expect(await routes('/v1/build')).toEqual(expect.arrayContaining(['/v1/build/[build_id]']));
    expect(await routes(`/v1/build/${id}`)).toEqual(expect.arrayContaining([
      '/v1/build/[build_id]/subjob', '/v1/build/[build_id]/artifacts.tar.gz', '/v1/build/[build_id]/artifacts.zip', '/v1/build/[build_id]/result',
    ]));
    expect(await routes(`/v1/build/${id}/subjob`)).toEqual(['/v1/build/[build_id]/subjob/[subjob_id]']);
    expect(await routes(`/v1/build/${id}/subjob/0`)).toEqual(['/v1/build/[build_id]/subjob/[subjob_id]/atom']);
    expect(await routes(`/v1/build/${id}/subjob/0/atom`)).toEqual(['/v1/build/[build_id]/subjob/[subjob_id]/atom/[atom_id]']);
    expect(await routes(`/v1/build/${id}/subjob/0/atom/0`)).toEqual(['/v1/build/[build_id]/subjob/[subjob_id]/atom/[atom_id]/console']);
    expect(await routes('/v1/worker')).toEqual(['/v1/worker/[worker_id]']);
    expect(await routes(`/v2/builds/${id}`)).toEqual(expect.arrayContaining(['/v2/builds/[build_id]/subjobs']));
  });
});

describe('GET /v1/queue', () => {
  it('lists builds not yet terminal: an ERROR or CANCELED build leaves it', async () => {
    const master = await startTestMaster();
    const queue = async () => ((await api(master, 'GET', '/v1/queue')).body.queue as { id: number }[]).map((build) => build.id);
    expect(await queue()).toEqual([]);
    const waiting = await waitingBuild(master);
    const failing = await postBuild(master, { type: 'directory', project_directory: `${tempDir()}/missing`, config: JOB });
    expect((await waitForBuild(master, failing)).status).toBe('ERROR');
    const second = await waitingBuild(master);
    expect(await queue()).toEqual([waiting, second]);
    const entry = (await api(master, 'GET', '/v1/queue')).body.queue[0];
    expect(entry).toMatchObject({ id: waiting, status: 'PREPARING', result: null });

    expect((await api(master, 'PUT', `/v1/build/${waiting}`, { json: { status: 'canceled' } })).status).toBe(200);
    expect(await queue()).toEqual([second]);
  });
});

describe('PUT /v1/build/:id', () => {
  it('cancels a build that is not terminal, and is a no-op on a terminal one', async () => {
    const master = await startTestMaster();
    const id = await waitingBuild(master);
    const cancel = await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } });
    expect(cancel.status).toBe(200);
    expect(cancel.body.STATUS).toBe('SUCCESS');
    const build = (await api(master, 'GET', `/v1/build/${id}`)).body.build;
    expect(build).toMatchObject({ status: 'CANCELED', result: 'CANCELED', failed_atoms: [] });
    expect(build.state_timestamps.finished).toEqual(expect.any(Number));

    const again = await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } });
    expect(again.status).toBe(200);
    expect(again.body.STATUS).toBe('SUCCESS');
    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build).toEqual(build);

    const failed = await postBuild(master, { type: 'directory', project_directory: `${tempDir()}/missing`, config: JOB });
    const errored = await waitForBuild(master, failed);
    expect(errored.status).toBe('ERROR');
    expect((await api(master, 'PUT', `/v1/build/${failed}`, { json: { status: 'canceled' } })).status).toBe(200);
    expect((await api(master, 'GET', `/v1/build/${failed}`)).body.build).toEqual(errored);
  });

  it('cancels a build while it prepares; until atomized it has no atoms and no details', async () => {
    const master = await startTestMaster();
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ X: 'sleep 20; echo 1' }] },
    });
    const preparing = await waitForBuild(master, id, (b) => b.status === 'PREPARING');
    expect(preparing).toMatchObject({ result: null, details: null, num_atoms: null, num_subjobs: 0, failed_atoms: null, artifacts: null });
    expect((await api(master, 'GET', `/v1/build/${id}/subjob`)).body.subjobs).toEqual([]);
    const cancel = await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } });
    expect(cancel.status).toBe(200);
    // Well before the atomizer's sleep ends.
    const build = await waitForBuild(master, id, undefined, 10_000);
    expect(build).toMatchObject({ status: 'CANCELED', result: 'CANCELED', num_atoms: null, failed_atoms: [] });
    expect((await api(master, 'GET', '/v1/queue')).body.queue).toEqual([]);
  });

  it('refuses any other body with 400 and an unknown id with 404', async () => {
    const master = await startTestMaster();
    const id = await waitingBuild(master);
    const bodies: unknown[] = [
      { status: 'foo' }, { status: 'success' }, { status: 'canceled', reason: 'x' }, { reason: 'x' }, {}, { status: null },
      { status: 1 }, { status: ['canceled'] }, [], 'canceled', null,
    ];
    for (const body of bodies) expectFailure(await api(master, 'PUT', `/v1/build/${id}`, { json: body }), 400);
    expectFailure(await api(master, 'PUT', `/v1/build/${id}`, { raw: '{"status": ' }), 400);
    const extra = await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled', reason: 'x' } });
    expect(extra.body.error).toContain('reason');
    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build.status).toBe('PREPARING');

    expectFailure(await api(master, 'PUT', '/v1/build/999', { json: { status: 'canceled' } }), 404, 'Invalid build id: 999.');
    expectFailure(await api(master, 'PUT', '/v1/build/abc', { json: { status: 'canceled' } }), 400);
  });
});
