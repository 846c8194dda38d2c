/**
 * The master's HTTP API as SPEC §1–§2 describe it, driven over loopback: conventions (headers, session,
 * routing, errors), POST /v1/build, the three trees and pagination, the queue and PUT /v1/build/:id.
 * Refused input and authentication are in test/security. Builds here need no worker: without one, a
 * prepared build waits in PREPARING.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { UUID, expectFailure, expectSessionHeaders } from '../support/http-expect.ts';

afterEach(cleanupAll);

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
    const all = (await api(master, 'GET', `/v2/builds/${id}/subjobs`)).body.subjobs as { id: number; atoms: unknown[] }[];
    expect(all).toHaveLength(3);
    // A page's atoms come from one read of the page: each subjob as its own route shows it, and as v1 lists it.
    for (const subjob of all) expect(subjob).toEqual((await api(master, 'GET', `/v2/builds/${id}/subjobs/${subjob.id}`)).body.subjob);
    const v1 = (await api(master, 'GET', `/v1/build/${id}/subjob`)).body.subjobs as { id: number; atoms: unknown[] }[];
    expect(v1.map((subjob) => [subjob.id, subjob.atoms])).toEqual(all.map((subjob) => [subjob.id, subjob.atoms]));
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
      '/v1/build/[build_id]/retry',
    ]));
    expect(await routes(`/v1/build/${id}/subjob`)).toEqual(['/v1/build/[build_id]/subjob/[subjob_id]']);
    expect(await routes(`/v1/build/${id}/subjob/0`)).toEqual(['/v1/build/[build_id]/subjob/[subjob_id]/atom']);
    expect(await routes(`/v1/build/${id}/subjob/0/atom`)).toEqual(['/v1/build/[build_id]/subjob/[subjob_id]/atom/[atom_id]']);
    expect(await routes(`/v1/build/${id}/subjob/0/atom/0`)).toEqual([
      '/v1/build/[build_id]/subjob/[subjob_id]/atom/[atom_id]/console', '/v1/build/[build_id]/subjob/[subjob_id]/atom/[atom_id]/attempts',
    ]);
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
