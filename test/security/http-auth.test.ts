/**
 * Security suite: authentication of the HTTP API (SPEC §1.1), driven over loopback against a real master.
 * Missing, wrong, truncated and non-hex digests; our clients' signed form (method, path, timestamp, nonce)
 * refused when replayed, moved, altered, stale or malformed; the original's body-only digest accepted
 * unless accept_legacy_digest = false; and the secret found in no response and no log line.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { signRequest } from '../../shared/auth.ts';
import { createLogger } from '../../shared/log.ts';
import { startMaster } from '../../master/server.ts';
import {
  api, cleanupAll, digest, masterConf, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild, type TestMaster,
} from '../support/cluster.ts';
import { NOT_AUTHENTICATED, expectFailure } from '../support/http-expect.ts';

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
describe('the signed form refuses', () => {
  const body = JSON.stringify({ type: 'directory', project_directory: '/nowhere', config: JOB });
  const signed = (secret: string, change: (headers: Record<string, string>) => void = () => undefined) => {
    const headers = signRequest(secret, 'POST', '/v1/build', body);
    change(headers);
    return headers;
  };
  it.each<[string, (secret: string) => Record<string, string>, RegExp]>([
    ['a timestamp 6 minutes old', (secret) => resign(secret, Date.now() - 6 * 60_000), /too old or its clock is off/],
    ['a timestamp 6 minutes ahead', (secret) => resign(secret, Date.now() + 6 * 60_000), /too old or its clock is off/],
    ['a timestamp that is not a number', (secret) => signed(secret, (headers) => { headers['clusterrunner-timestamp'] = 'now'; }), /^Message digest does not match header/],
    ['a timestamp changed after signing', (secret) => signed(secret, (headers) => { headers['clusterrunner-timestamp'] = String(Date.now() + 1000); }), /^Message digest does not match header/],
    ['a nonce changed after signing', (secret) => signed(secret, (headers) => { headers['clusterrunner-nonce'] = 'another'; }), /^Message digest does not match header/],
    ['a 10,000-character nonce', (secret) => signed(secret, (headers) => { headers['clusterrunner-nonce'] = 'n'.repeat(10_000); }), /^Message digest does not match header/],
    ['a digest for the other method', (secret) => signRequest(secret, 'PUT', '/v1/build', body), /^Message digest does not match header/],
    ['a digest with a wrong last character', (secret) => signed(secret, (headers) => {
      const value = headers['clusterrunner-message-authentication-digest']!;
      headers['clusterrunner-message-authentication-digest'] = value.slice(0, -1) + (value.endsWith('0') ? '1' : '0');
    }), /^Message digest does not match header/],
  ])('%s: 401, nothing created', async (_label, headers, expected) => {
    const master = await startTestMaster();
    const response = await api(master, 'POST', '/v1/build', { raw: body, sign: false, headers: headers(master.secret) });
    expectFailure(response, 401);
    expect(response.body.error).toMatch(expected);
    expect(await buildIds(master)).toEqual([]);
  });

  /** A signature made at another time, as a client with a wrong clock would make it. */
  function resign(secret: string, atMs: number): Record<string, string> {
    const realNow = Date.now;
    Date.now = () => atMs;
    try {
      return signRequest(secret, 'POST', '/v1/build', body);
    } finally {
      Date.now = realNow;
    }
  }
});

describe('the original\'s body-only digest', () => {
  it('is accepted by default and refused with accept_legacy_digest = false; signed requests work either way', async () => {
    const body = JSON.stringify({ type: 'directory', project_directory: tempDir(), config: JOB });
    const open = await startTestMaster();
    expect((await api(open, 'POST', '/v1/build', { raw: body, sign: false, headers: { [DIGEST]: digest(open.secret, body) } })).status).toBe(202);

    const strict = await startTestMaster({ conf: { acceptLegacyDigest: false } });
    expectFailure(await api(strict, 'POST', '/v1/build', { raw: body, sign: false, headers: { [DIGEST]: digest(strict.secret, body) } }), 401, NOT_AUTHENTICATED);
    const cancel = JSON.stringify({ status: 'canceled' });
    expectFailure(await api(strict, 'PUT', '/v1/build/1', { raw: cancel, sign: false, headers: { [DIGEST]: digest(strict.secret, cancel) } }), 401, NOT_AUTHENTICATED);
    expect(await buildIds(strict)).toEqual([]);
    expect((await api(strict, 'POST', '/v1/build', { raw: body, sign: false, headers: signRequest(strict.secret, 'POST', '/v1/build', body) })).status).toBe(202);
  });
});

describe('the secret', () => {
  it('appears in no response and no log line, whatever is asked or refused', async () => {
    const secret = `secret-${randomBytes(12).toString('hex')}`;
    let logged = '';
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logged += chunk.toString();
        done();
      },
    });
    const base = tempDir('cr-master-');
    const server = await startMaster({
      conf: masterConf(base, secret), log: createLogger({ name: 'master', level: 'debug', destination: sink }), version: 'test', host: '127.0.0.1',
    });
    const master = { url: server.url, secret, base };
    try {
      const worker = await startTestWorker(master);
      const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['echo "$X" > "$ARTIFACT_DIR/x"'], atomizers: [{ X: 'seq 1 2' }] } });
      expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
      const responses: string[] = [];
      const seen = async (method: string, path: string, options: Parameters<typeof api>[3] = {}) => {
        const response = await api(master, method, path, options);
        responses.push(`${method} ${path} ${response.status} ${JSON.stringify(Object.fromEntries(response.headers))} ${response.text}`);
        return response;
      };
      for (const path of ['/', '/v1', '/v1/version', '/v1/build', `/v1/build/${id}`, `/v1/build/${id}/subjob`, `/v1/build/${id}/subjob/0`,
        `/v1/build/${id}/subjob/0/atom`, `/v1/build/${id}/subjob/0/atom/0/console`, '/v1/queue', '/v1/worker', '/v1/eventlog', '/v1/metrics',
        '/v2/builds', `/v1/build/${id}/artifacts.tar.gz`, `/v1/build/${id}/artifacts.zip`, '/nowhere']) {
        await seen('GET', path);
      }
      // Refusals of every kind, including one that sends the secret itself as the digest.
      await seen('POST', '/v1/build', { raw: '{"type": "directory"}', sign: false, headers: { [DIGEST]: secret } });
      await seen('POST', '/v1/build', { raw: 'not json' });
      await seen('PUT', `/v1/build/${id}`, { raw: '{"status": "canceled"}', sign: false });
      await seen('POST', '/v1/worker/shutdown', { raw: '{"workers": [999]}' });
      await worker.stop();

      for (const response of responses) expect(response.includes(secret), response.slice(0, 200)).toBe(false);
      expect(logged.length).toBeGreaterThan(0);
      expect(logged.includes(secret)).toBe(false);
    } finally {
      await server.close();
    }
  });
});
