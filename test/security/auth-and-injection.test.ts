/**
 * Security suite, end to end over loopback:
 *
 * - authentication (SPEC §1.1) as a table over every mutating endpoint: digests missing, malformed or made
 *   for something else, our signed form moved, altered, stale or replayed; each refused with 401 and the
 *   SPEC's message, acting on nothing; the original's body-only digest switchable with accept_legacy_digest;
 * - the secret in no response, no artifact and no log line of a real CLI master and worker, whether it comes
 *   from the conf file or from CLUSTERRUNNER_SECRET;
 * - git sources that try option injection or transport helpers: 400 naming the field before any process
 *   starts (a `git` first on PATH records every run), nothing fetched into the git cache, no marker file.
 *
 * Reads under authenticate_reads are in http-auth.test.ts.
 */
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeDigest, DIGEST_HEADER, NONCE_HEADER, signRequest, TIMESTAMP_HEADER } from '../../shared/auth.ts';
import {
  api, cleanupAll, digest, eventually, postBuild, readApiResponse, spawnCli, startTestMaster, startTestWorker, tempDir, waitForBuild, writeConf,
  type ApiResponse, type CliProcess, type TestMaster,
} from '../support/cluster.ts';
import { downloadArtifacts, freePort, listFiles, readText } from '../support/build-results.ts';
import { NOT_AUTHENTICATED, expectFailure, within } from '../support/http-expect.ts';

afterAll(cleanupAll);

const JOB = { commands: ['true'], atomizers: [{ X: 'seq 1 3' }] };
const UNKNOWN_ID = 424242;

/** What a client puts on the wire; headers as a list so that one name can be sent twice. */
interface Sent {
  readonly method: string;
  readonly path: string;
  readonly body: string;
  readonly headers: readonly (readonly [string, string])[];
}

async function send(target: { url: string }, request: Sent): Promise<ApiResponse> {
  const headers = new Headers({ 'Content-Type': 'application/json' });
  for (const [name, value] of request.headers) headers.append(name, value);
  const response = await fetch(`${target.url}${request.path}`, {
    method: request.method, headers, body: request.method === 'GET' ? undefined : request.body,
  });
  return readApiResponse(response);
}

/** Our clients' signed form with every part chosen by the test; the product signs `${timestampMs}` as a number. */
function signedHeaders(secret: string, method: string, path: string, body: string, parts: { timestamp?: string; signedTimestamp?: string; nonce?: string } = {}): [string, string][] {
  const timestamp = parts.timestamp ?? String(Date.now());
  const nonce = parts.nonce ?? randomUUID();
  const payload = `${method.toUpperCase()}\n${path}\n${parts.signedTimestamp ?? timestamp}\n${nonce}\n${body}`;
  return [[DIGEST_HEADER, computeDigest(secret, payload)], [TIMESTAMP_HEADER, timestamp], [NONCE_HEADER, nonce]];
}

function withHeader(headers: [string, string][], name: string, value: string | null): [string, string][] {
  const others = headers.filter(([key]) => key !== name);
  return value === null ? others : [...others, [name, value]];
}

// ---------------------------------------------------------------------------------------------------------
// (a) Authentication

/** A mutating endpoint: the real request a refusal must keep from acting, and a harmless one that passes authentication. */
interface Endpoint {
  readonly name: string;
  readonly method: string;
  readonly path: () => string;
  readonly body: () => string;
  readonly harmless: { readonly path: () => string; readonly body: string; readonly status: number };
}

/** What the test knows when it builds a request: the real request of the endpoint and the secret. */
interface Context extends Sent {
  readonly secret: string;
}

/** A refused variant: how it changes the request, and the error the master must answer with. */
type Refusal = readonly [string, (context: Context) => Partial<Sent> & { headers: readonly (readonly [string, string])[] }, string | RegExp];

const STALE = /^Message digest does not match header, message not authenticated\. \(The request is too old or its clock is off\.\)$/;

/** The original's body-only digest, wrong in every way a client or an attacker gets it wrong. */
const LEGACY_REFUSALS: readonly Refusal[] = [
  ['no digest header', () => ({ headers: [] }), NOT_AUTHENTICATED],
  ['an empty digest', () => ({ headers: [[DIGEST_HEADER, '']] }), NOT_AUTHENTICATED],
  ['the digest of another body', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, digest(secret, `${body} `)]] }), NOT_AUTHENTICATED],
  ['a digest made with another secret', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, digest(`${secret}x`, body)]] }), NOT_AUTHENTICATED],
  ['truncated to 127 hex characters', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, digest(secret, body).slice(0, 127)]] }), NOT_AUTHENTICATED],
  ['truncated to 64 hex characters', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, digest(secret, body).slice(0, 64)]] }), NOT_AUTHENTICATED],
  ['one hex character too long', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, `${digest(secret, body)}0`]] }), NOT_AUTHENTICATED],
  ['twice as long', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, digest(secret, body).repeat(2)]] }), NOT_AUTHENTICATED],
  ['128 characters that are not hex', () => ({ headers: [[DIGEST_HEADER, 'z'.repeat(128)]] }), NOT_AUTHENTICATED],
  ['the right digest with a space inside', ({ secret, body }) => {
    const right = digest(secret, body);
    return { headers: [[DIGEST_HEADER, `${right.slice(0, 64)} ${right.slice(64)}`]] };
  }, NOT_AUTHENTICATED],
  ['the right digest with a tab inside', ({ secret, body }) => {
    const right = digest(secret, body);
    return { headers: [[DIGEST_HEADER, `${right.slice(0, 64)}\t${right.slice(64)}`]] };
  }, NOT_AUTHENTICATED],
  ['the right digest sent twice', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, digest(secret, body)], [DIGEST_HEADER, digest(secret, body)]] }), NOT_AUTHENTICATED],
  ['the right digest and a wrong one', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, digest(secret, body)], [DIGEST_HEADER, 'f'.repeat(128)]] }), NOT_AUTHENTICATED],
  ['base64 of the right bytes', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, Buffer.from(digest(secret, body), 'hex').toString('base64')]] }), NOT_AUTHENTICATED],
  ['a "sha512=" prefix', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, `sha512=${digest(secret, body)}`]] }), NOT_AUTHENTICATED],
  ['HMAC-SHA256 instead of SHA-512', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, createHmac('sha256', secret).update(body).digest('hex')]] }), NOT_AUTHENTICATED],
  ['a SHA-512 of the body and the secret (not an HMAC)', ({ secret, body }) => ({ headers: [[DIGEST_HEADER, createHash('sha512').update(`${body}${secret}`).digest('hex')]] }), NOT_AUTHENTICATED],
  ['the secret itself', ({ secret }) => ({ headers: [[DIGEST_HEADER, secret]] }), NOT_AUTHENTICATED],
  ['the right digest under another header name', ({ secret, body }) => ({ headers: [['ClusterRunner-Digest', digest(secret, body)]] }), NOT_AUTHENTICATED],
];

/** Our signed form (method, path, timestamp, nonce and body), moved, altered, stale or malformed. */
const SIGNED_REFUSALS: readonly Refusal[] = [
  ['signed for the same path in v2', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path.replace('/v1/', '/v2/'), body) }), NOT_AUTHENTICATED],
  ['signed for the unversioned twin of the path', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path.replace('/v1/', '/'), body) }), NOT_AUTHENTICATED],
  ['signed for the path with a trailing slash', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, `${path}/`, body) }), NOT_AUTHENTICATED],
  ['sent with a query string added', ({ secret, method, path, body }) => ({ path: `${path}?x=1`, headers: signedHeaders(secret, method, path, body) }), NOT_AUTHENTICATED],
  ['signed for GET', ({ secret, path, body }) => ({ headers: signedHeaders(secret, 'GET', path, body) }), NOT_AUTHENTICATED],
  ['signed for another mutating method', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method === 'PUT' ? 'POST' : 'PUT', path, body) }), NOT_AUTHENTICATED],
  ['a body changed after signing (still valid JSON)', ({ secret, method, path, body }) => ({ body: `${body} `, headers: signedHeaders(secret, method, path, body) }), NOT_AUTHENTICATED],
  ['signed over the body with a newline added', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, `${body}\n`) }), NOT_AUTHENTICATED],
  ['signed with another secret', ({ secret, method, path, body }) => ({ headers: signedHeaders(`${secret}x`, method, path, body) }), NOT_AUTHENTICATED],
  ['a signed digest truncated to 127 hex characters', ({ secret, method, path, body }) => {
    const headers = signedHeaders(secret, method, path, body);
    return { headers: withHeader(headers, DIGEST_HEADER, headers[0]![1].slice(0, 127)) };
  }, NOT_AUTHENTICATED],
  ['a timestamp 6 minutes old', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: String(Date.now() - 6 * 60_000) }) }), STALE],
  ['a timestamp 6 minutes ahead', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: String(Date.now() + 6 * 60_000) }) }), STALE],
  ['a timestamp 5 minutes 10 seconds old', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: String(Date.now() - 310_000) }) }), STALE],
  ['a timestamp in seconds, not milliseconds', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: String(Math.floor(Date.now() / 1000)) }) }), STALE],
  ['a timestamp of 0', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: '0' }) }), STALE],
  ['a timestamp that is not a number', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: 'now', signedTimestamp: 'NaN' }) }), NOT_AUTHENTICATED],
  ['a timestamp in exponent notation', ({ secret, method, path, body }) => {
    const now = Date.now();
    return { headers: signedHeaders(secret, method, path, body, { timestamp: `${now / 1000}e3`, signedTimestamp: String(now) }) };
  }, NOT_AUTHENTICATED],
  ['a timestamp with a fraction', ({ secret, method, path, body }) => {
    const now = Date.now();
    return { headers: signedHeaders(secret, method, path, body, { timestamp: `${now}.0`, signedTimestamp: String(now) }) };
  }, NOT_AUTHENTICATED],
  ['a negative timestamp', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: '-1' }) }), NOT_AUTHENTICATED],
  ['an empty timestamp', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: '', signedTimestamp: '0' }) }), NOT_AUTHENTICATED],
  ['a 17-digit timestamp', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { timestamp: `${Date.now()}0000` }) }), NOT_AUTHENTICATED],
  ['a timestamp changed after signing', ({ secret, method, path, body }) => {
    const headers = signedHeaders(secret, method, path, body);
    return { headers: withHeader(headers, TIMESTAMP_HEADER, String(Number(headers[1]![1]) + 1)) };
  }, NOT_AUTHENTICATED],
  ['a nonce changed after signing', ({ secret, method, path, body }) => ({ headers: withHeader(signedHeaders(secret, method, path, body), NONCE_HEADER, randomUUID()) }), NOT_AUTHENTICATED],
  ['a 10,000-character nonce', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { nonce: 'n'.repeat(10_000) }) }), NOT_AUTHENTICATED],
  ['a 129-character nonce', ({ secret, method, path, body }) => ({ headers: signedHeaders(secret, method, path, body, { nonce: 'n'.repeat(129) }) }), NOT_AUTHENTICATED],
  ['the nonce left out (timestamp only)', ({ secret, method, path, body }) => ({ headers: withHeader(signedHeaders(secret, method, path, body), NONCE_HEADER, null) }), NOT_AUTHENTICATED],
  ['the timestamp left out (nonce only)', ({ secret, method, path, body }) => ({ headers: withHeader(signedHeaders(secret, method, path, body), TIMESTAMP_HEADER, null) }), NOT_AUTHENTICATED],
];

describe('authentication of every mutating endpoint', () => {
  let master: TestMaster;
  /** A build running an atom, that a request let through would cancel. */
  let running: number;
  /** A connected worker, that a request let through would drain. */
  let workerId: number;
  const project = tempDir('cr-project-');

  beforeAll(async () => {
    master = await startTestMaster();
    await startTestWorker(master);
    running = await postBuild(master, { type: 'directory', project_directory: project, config: { commands: ['sleep 60'], atomizers: [{ X: 'seq 1 1' }] } });
    await waitForBuild(master, running, (build) => build.status === 'BUILDING');
    workerId = (await api(master, 'GET', '/v1/worker')).body.workers[0].id as number;
  });

  const ENDPOINTS: readonly Endpoint[] = [
    {
      name: 'POST /v1/build', method: 'POST', path: () => '/v1/build',
      body: () => JSON.stringify({ type: 'directory', project_directory: project, config: JOB }),
      harmless: { path: () => '/v1/build', body: '{"type": "directory"}', status: 400 },
    },
    {
      name: 'PUT /v1/build/:id', method: 'PUT', path: () => `/v1/build/${running}`, body: () => '{"status": "canceled"}',
      harmless: { path: () => `/v1/build/${UNKNOWN_ID}`, body: '{"status": "canceled"}', status: 404 },
    },
    {
      name: 'POST /v1/worker/shutdown', method: 'POST', path: () => '/v1/worker/shutdown', body: () => JSON.stringify({ workers: [workerId] }),
      harmless: { path: () => '/v1/worker/shutdown', body: JSON.stringify({ workers: [UNKNOWN_ID] }), status: 404 },
    },
    {
      name: 'POST /v1/worker/:id/shutdown', method: 'POST', path: () => `/v1/worker/${workerId}/shutdown`, body: () => '',
      harmless: { path: () => `/v1/worker/${UNKNOWN_ID}/shutdown`, body: '', status: 404 },
    },
  ];

  const realRequest = (endpoint: Endpoint): Context => ({
    secret: master.secret, method: endpoint.method, path: endpoint.path(), body: endpoint.body(), headers: [],
  });

  async function expectRefused(endpoint: Endpoint, change: Refusal[1], expected: Refusal[2]): Promise<void> {
    const context = realRequest(endpoint);
    const response = await send(master, { ...context, ...change(context) });
    expectFailure(response, 401, expected);
  }

  const rows = (refusals: readonly Refusal[]) => ENDPOINTS.flatMap((endpoint) => refusals.map(([what, change, expected]) => [endpoint.name, what, endpoint, change, expected] as const));

  it.each(rows(LEGACY_REFUSALS))('%s, %s: 401', async (_name, _what, endpoint, change, expected) => {
    await expectRefused(endpoint, change, expected);
  });

  it.each(rows(SIGNED_REFUSALS))('%s, signed form, %s: 401', async (_name, _what, endpoint, change, expected) => {
    await expectRefused(endpoint, change, expected);
  });

  const REPLAYED = `${NOT_AUTHENTICATED} (This request was already received.)`;
  const asHarmless = (endpoint: Endpoint) => ({ method: endpoint.method, path: endpoint.harmless.path(), body: endpoint.harmless.body });

  it.each(ENDPOINTS.map((endpoint) => [endpoint.name, endpoint] as const))('%s: a signed request replayed as it was: 401', async (_name, endpoint) => {
    const request = asHarmless(endpoint);
    const headers = signedHeaders(master.secret, request.method, request.path, request.body);
    expect((await send(master, { ...request, headers })).status).toBe(endpoint.harmless.status);
    expectFailure(await send(master, { ...request, headers }), 401, REPLAYED);
  });

  it.each(ENDPOINTS.map((endpoint) => [endpoint.name, endpoint] as const))('%s: a nonce used again with a fresh timestamp and a valid digest: 401', async (_name, endpoint) => {
    const request = asHarmless(endpoint);
    const nonce = randomUUID();
    expect((await send(master, { ...request, headers: signedHeaders(master.secret, request.method, request.path, request.body, { nonce, timestamp: String(Date.now() - 1000) }) })).status)
      .toBe(endpoint.harmless.status);
    expectFailure(await send(master, { ...request, headers: signedHeaders(master.secret, request.method, request.path, request.body, { nonce }) }), 401, REPLAYED);
  });

  it.each(ENDPOINTS.map((endpoint) => [endpoint.name, endpoint] as const))('%s: a nonce first used on another endpoint: 401', async (_name, endpoint) => {
    const nonce = randomUUID();
    // One nonce cache serves the whole master: a nonce is spent wherever it was first accepted.
    const otherEndpoint = ENDPOINTS.find((candidate) => candidate !== endpoint)!;
    const other = asHarmless(otherEndpoint);
    expect((await send(master, { ...other, headers: signedHeaders(master.secret, other.method, other.path, other.body, { nonce }) })).status).toBe(otherEndpoint.harmless.status);
    const request = asHarmless(endpoint);
    expectFailure(await send(master, { ...request, headers: signedHeaders(master.secret, request.method, request.path, request.body, { nonce }) }), 401, REPLAYED);
  });

  it('refused requests acted on nothing: no build created, the build still runs, the worker still serves', async () => {
    expect((await api(master, 'GET', '/v1/build')).body.builds.map((build: { id: number }) => build.id)).toEqual([running]);
    expect((await api(master, 'GET', `/v1/build/${running}`)).body.build.status).toBe('BUILDING');
    const workers = (await api(master, 'GET', '/v1/worker')).body.workers as { id: number; is_alive: boolean; is_in_shutdown_mode: boolean }[];
    expect(workers.map((worker) => [worker.id, worker.is_alive, worker.is_in_shutdown_mode])).toEqual([[workerId, true, false]]);
  });

  it.each(ENDPOINTS.map((endpoint) => [endpoint.name, endpoint] as const))('%s: the body digest (lower or upper case, any header case) and the signed form pass', async (_name, endpoint) => {
    const request = asHarmless(endpoint);
    const right = digest(master.secret, request.body);
    for (const headers of [
      [[DIGEST_HEADER, right]], [[DIGEST_HEADER.toUpperCase(), right.toUpperCase()]],
      signedHeaders(master.secret, request.method, request.path, request.body), Object.entries(signRequest(master.secret, request.method, request.path, request.body)),
    ] as [string, string][][]) {
      const response = await send(master, { ...request, headers });
      expect(response.status, `${headers.map(([name]) => name).join(', ')}: ${response.text}`).toBe(endpoint.harmless.status);
    }
  });

  it('the same real requests, with an upper-case digest, do act: they were refused for their digests alone', async () => {
    const [create, cancel, shutdown] = ENDPOINTS.map(realRequest);
    const upper = (request: Context) => [[DIGEST_HEADER, digest(master.secret, request.body).toUpperCase()]] as [string, string][];
    expect((await send(master, { ...create!, headers: upper(create!) })).status).toBe(202);
    expect((await send(master, { ...cancel!, headers: upper(cancel!) })).status).toBe(200);
    expect((await api(master, 'GET', `/v1/build/${running}`)).body.build.status).toBe('CANCELED');
    expect((await send(master, { ...shutdown!, headers: upper(shutdown!) })).status).toBe(200);
    expect((await api(master, 'GET', '/v1/worker')).body.workers).toEqual([]);
  });

  describe('with accept_legacy_digest = false', () => {
    let strict: TestMaster;
    beforeAll(async () => {
      strict = await startTestMaster({ conf: { acceptLegacyDigest: false } });
    });

    it.each(ENDPOINTS.map((endpoint) => [endpoint.name, endpoint] as const))('%s: the body digest is refused, the signed form passes', async (_name, endpoint) => {
      const request = asHarmless(endpoint);
      const right = digest(strict.secret, request.body);
      expectFailure(await send(strict, { ...request, headers: [[DIGEST_HEADER, right]] }), 401, NOT_AUTHENTICATED);
      expectFailure(await send(strict, { ...request, headers: [[DIGEST_HEADER, right.toUpperCase()]] }), 401, NOT_AUTHENTICATED);
      const signed = await send(strict, { ...request, headers: signedHeaders(strict.secret, request.method, request.path, request.body) });
      expect(signed.status, signed.text).toBe(endpoint.harmless.status);
    });

    it('creates nothing from a body digest, and builds from the signed form', async () => {
      const body = JSON.stringify({ type: 'directory', project_directory: project, config: JOB });
      expectFailure(await send(strict, { method: 'POST', path: '/v1/build', body, headers: [[DIGEST_HEADER, digest(strict.secret, body)]] }), 401, NOT_AUTHENTICATED);
      expect((await api(strict, 'GET', '/v1/build')).body.builds).toEqual([]);
      expect((await send(strict, { method: 'POST', path: '/v1/build', body, headers: signedHeaders(strict.secret, 'POST', '/v1/build', body) })).status).toBe(202);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------
// (b) The secret

interface Exposure {
  readonly secret: string;
  /** Every response, artifact file and log, labelled: where the secret must not be. */
  readonly places: ReadonlyMap<string, string>;
}

/**
 * A CLI master and a CLI worker (log_level debug) with the secret from the conf file or from the environment;
 * a build whose setup, atoms and teardown print their environment, a build whose atomizer fails after doing
 * the same, refused requests of every kind, then every read endpoint, the artifacts and both logs.
 */
async function exposeSecret(via: 'conf' | 'env'): Promise<Exposure> {
  const dir = tempDir('cr-secret-');
  const secret = `s3cr3t-${randomBytes(16).toString('hex')}`;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // An outer CLUSTERRUNNER_SECRET (the suite run as a ClusterRunner atom) must not stand in for the conf's.
  const env = { HOME: dir, CLUSTERRUNNER_SECRET: via === 'env' ? secret : undefined };
  const general = (base: string) => ({ ...(via === 'conf' ? { secret } : {}), base_directory: join(dir, base), log_level: 'debug' });
  const places = new Map<string, string>();

  const masterConfFile = writeConf(dir, 'master', { general: general('master-base') });
  const master = { url, secret };
  const masterProcess = spawnCli(['master', '-p', String(port), '-c', masterConfFile], { env });
  await eventually('the master to answer GET /', async () => {
    if (masterProcess.child.exitCode !== null) throw new Error(`master exited early: ${masterProcess.output()}`);
    return (await fetch(`${url}/`)).ok;
  });
  const workerConfFile = writeConf(dir, 'worker', { general: general('worker-base'), worker: { master_url: url, heartbeat_interval: 0.2, kill_grace_seconds: 0.5 } });
  const workerProcess = spawnCli(['worker', '-e', '1', '-n', 'secret-worker', '-c', workerConfFile], { env });
  const workerId = await eventually('the worker to connect', async () => {
    if (workerProcess.child.exitCode !== null) throw new Error(`worker exited early: ${workerProcess.output()}`);
    return ((await api(master, 'GET', '/v1/worker')).body.workers as { id: number }[])[0];
  }).then((worker) => worker.id);

  // Printing the environment is what a user debugging a build does first; every place it lands is readable.
  const built = await postBuild(master, {
    type: 'directory', project_directory: tempDir('cr-project-'), config: {
      setup_build: ['env'], teardown_build: ['env'], atomizers: [{ X: 'seq 1 2' }],
      commands: ['env | sort', 'env > "$ARTIFACT_DIR/env.txt"'],
    },
  });
  const failed = await postBuild(master, { type: 'directory', project_directory: tempDir('cr-project-'), config: { commands: ['true'], atomizers: [{ X: 'env >&2; exit 1' }] } });
  expect((await waitForBuild(master, built)).status).toBe('SUCCESS');
  expect((await waitForBuild(master, failed)).status).toBe('ERROR');

  const record = (label: string, response: ApiResponse) => places.set(label, `${response.status} ${JSON.stringify(Object.fromEntries(response.headers))} ${response.text}`);
  const refusals: [string, Sent][] = [
    ['the secret sent as the digest', { method: 'POST', path: '/v1/build', body: '{"type": "directory"}', headers: [[DIGEST_HEADER, secret]] }],
    ['a wrong digest', { method: 'POST', path: '/v1/build', body: '{"type": "directory"}', headers: [[DIGEST_HEADER, 'f'.repeat(128)]] }],
    ['a stale signature', { method: 'PUT', path: `/v1/build/${built}`, body: '{}', headers: signedHeaders(secret, 'PUT', `/v1/build/${built}`, '{}', { timestamp: '1' }) }],
    ['an unsigned shutdown', { method: 'POST', path: '/v1/worker/shutdown', body: '{"shutdown_all": true}', headers: [] }],
    ['invalid JSON', { method: 'POST', path: '/v1/build', body: '{', headers: [[DIGEST_HEADER, digest(secret, '{')]] }],
    ['an unknown key', { method: 'POST', path: '/v1/build', body: '{"secret": 1}', headers: [[DIGEST_HEADER, digest(secret, '{"secret": 1}')]] }],
    ['an unknown worker', { method: 'POST', path: `/v1/worker/${UNKNOWN_ID}/shutdown`, body: '', headers: [[DIGEST_HEADER, digest(secret, '')]] }],
    ['an unknown route', { method: 'GET', path: '/v1/secret', body: '', headers: [] }],
  ];
  for (const [label, request] of refusals) {
    const response = await send(master, request);
    expect(response.status, label).toBeGreaterThanOrEqual(400);
    record(`${request.method} ${request.path} (${label})`, response);
  }

  const reads = ['/', '/v1', '/v1/version', '/v1/build', '/v2/builds', '/v1/queue', '/v1/worker', `/v1/worker/${workerId}`, '/v1/slave',
    '/v1/eventlog', '/v1/metrics'];
  for (const id of [built, failed]) {
    reads.push(`/v1/build/${id}`, `/v1/build/${id}/subjob`, `/v1/build/${id}/result`);
  }
  for (const subjob of [0, 1]) {
    reads.push(`/v1/build/${built}/subjob/${subjob}`, `/v1/build/${built}/subjob/${subjob}/atom`, `/v1/build/${built}/subjob/${subjob}/atom/0`,
      `/v1/build/${built}/subjob/${subjob}/atom/0/console?max_lines=1000`);
  }
  for (const path of reads) record(`GET ${path}`, await api(master, 'GET', path));
  for (const kind of ['tar.gz', 'zip'] as const) {
    const unpacked = await downloadArtifacts(master, built, kind);
    for (const file of listFiles(unpacked)) places.set(`artifacts.${kind}: ${file}`, readText(unpacked, file));
  }

  await stopCli(workerProcess);
  await stopCli(masterProcess);
  places.set('the master log', masterProcess.output());
  places.set('the worker log', workerProcess.output());
  return { secret, places };
}

/** SIGTERM to the process group, as an operator stops it; the logs are complete once it has exited. */
async function stopCli(cli: CliProcess): Promise<void> {
  process.kill(-cli.child.pid!, 'SIGTERM');
  await within(cli.exited, 15_000, 'a CLI process to exit on SIGTERM');
}

function placesHolding(exposure: Exposure): string[] {
  return [...exposure.places].filter(([, text]) => text.includes(exposure.secret)).map(([label]) => label);
}

describe.concurrent('the secret', () => {
  it('from the conf file: in no response, artifact or log line of a CLI master and worker', async ({ expect }) => {
    const exposure = await exposeSecret('conf');
    expect(exposure.places.get('the master log')).toContain('request refused: not authenticated');
    expect(exposure.places.get('the worker log')!.length).toBeGreaterThan(0);
    expect(placesHolding(exposure)).toEqual([]);
  });

  it('from CLUSTERRUNNER_SECRET: in no response, artifact or log line either (commands must not inherit it)', async ({ expect }) => {
    const exposure = await exposeSecret('env');
    expect(exposure.places.get('the master log')).toContain('request refused: not authenticated');
    expect(placesHolding(exposure)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// (c) Git injection

describe('git sources that try option injection or transport helpers', () => {
  const spy = tempDir('cr-git-spy-');
  const runs = join(spy, 'runs.log');
  const marker = join(tempDir('cr-pwned-'), 'pwned');
  const touch = `touch ${marker}`;
  /* ext:: reads "% " as an escaped space. */
  const extTouch = `ext::sh -c touch% ${marker}`;
  const HEX40 = 'a'.repeat(40);
  const GOOD = { type: 'git', url: 'https://example.invalid/org/repo.git' };
  const originalPath = process.env['PATH'];
  let master: TestMaster;

  beforeAll(async () => {
    // Logs every git run and fails: with it first on PATH, any git the master starts is recorded.
    writeFileSync(join(spy, 'git'), `#!/bin/sh\necho "git $*" >> '${runs}'\nexit 1\n`);
    chmodSync(join(spy, 'git'), 0o755);
    process.env['PATH'] = `${spy}:${originalPath ?? ''}`;
    // The defaults, as users run them: local repositories allowed.
    master = await startTestMaster();
  });

  afterAll(() => {
    process.env['PATH'] = originalPath;
  });

  /** [what, fields over a well-formed git build, the field the error must name] */
  const CASES: readonly [string, Record<string, unknown>, string][] = [
    // Transport helpers in the url.
    ['ext:: running a shell', { url: extTouch }, 'url'],
    ['ext:: with -c protocol.ext.allow=always as the branch (CVE-2022-25912)', { url: extTouch, branch: '-c protocol.ext.allow=always' }, 'url'],
    ['EXT:: in upper case', { url: `EXT::sh -c touch% ${marker}` }, 'url'],
    ['ext:: after a tab', { url: `\t${extTouch}` }, 'url'],
    ['fd::17', { url: 'fd::17' }, 'url'],
    ['fd::17 with a path', { url: 'fd::17/repo' }, 'url'],
    ['a helper named with +', { url: 'remote+helper::https://example.invalid/repo' }, 'url'],
    ['type GIT in upper case with ext::', { type: 'GIT', url: extTouch }, 'url'],
    // Options in the url.
    ['-oProxyCommand as the url', { url: `-oProxyCommand=${touch}` }, 'url'],
    ['--upload-pack as the url (CVE-2022-24433)', { url: `--upload-pack=${touch}` }, 'url'],
    ['-u as the url (CVE-2022-24066)', { url: `-u ${touch}` }, 'url'],
    ['-u glued to its value', { url: `-u${touch.replace(' ', '')}` }, 'url'],
    ['-c protocol.ext.allow=always as the url', { url: '-c protocol.ext.allow=always' }, 'url'],
    ['--config as the url', { url: '--config=protocol.ext.allow=always' }, 'url'],
    ['--template as the url', { url: `--template=${marker}` }, 'url'],
    ['ssh://-oProxyCommand (CVE-2017-1000117)', { url: `ssh://-oProxyCommand=touch%20${marker}/foo` }, 'url'],
    ['git+ssh://-oProxyCommand', { url: `git+ssh://-oProxyCommand=touch%20${marker}/foo` }, 'url'],
    ['ssh+git://-oProxyCommand', { url: `ssh+git://-oProxyCommand=touch%20${marker}/foo` }, 'url'],
    ['ssh:// with a percent-encoded dash', { url: `ssh://%2DoProxyCommand=touch%20${marker}/foo` }, 'url'],
    ['a bracketed option as the url', { url: '[-oProxyCommand=x]' }, 'url'],
    ['ssh:// with a bracketed option in the authority', { url: 'ssh://[-oProxyCommand=x]/repo' }, 'url'],
    ['ssh:// user starting with a dash', { url: 'ssh://-oProxyCommand=x@example.invalid/repo' }, 'url'],
    ['scp-like path starting with --upload-pack', { url: `git@example.invalid:--upload-pack=${touch.replace(' ', '')}` }, 'url'],
    ['an option after the url', { url: `https://example.invalid/repo.git --upload-pack=${touch}` }, 'url'],
    ['an option after a newline', { url: `https://example.invalid/repo.git\n--upload-pack=${touch}` }, 'url'],
    ['an option after a NUL', { url: 'https://example.invalid/repo.git\u0000--upload-pack=x' }, 'url'],
    ['an option after a no-break space', { url: '\u00a0--upload-pack=x' }, 'url'],
    // Options and revision expressions in the branch.
    ['--upload-pack as the branch (CVE-2022-24433)', { branch: `--upload-pack=${touch}` }, 'branch'],
    ['-u as the branch (CVE-2022-24066)', { branch: `-u ${touch}` }, 'branch'],
    ['-c protocol.ext.allow=always as the branch', { branch: '-c protocol.ext.allow=always' }, 'branch'],
    ['--config as the branch', { branch: '--config=protocol.ext.allow=always' }, 'branch'],
    ['--output as the branch', { branch: `--output=${marker}` }, 'branch'],
    ['-c core.sshCommand as the branch', { branch: `-c core.sshCommand=${touch}` }, 'branch'],
    ['-ccore.sshCommand glued', { branch: `-ccore.sshCommand=${touch.replace(' ', '')}` }, 'branch'],
    ['--exec as the branch', { branch: `--exec=${touch}` }, 'branch'],
    ['.. as the branch', { branch: '..' }, 'branch'],
    ['a branch climbing with ..', { branch: '../../etc/passwd' }, 'branch'],
    ['refs/heads/../..', { branch: 'refs/heads/../../x' }, 'branch'],
    ['HEAD@{0}', { branch: 'HEAD@{0}' }, 'branch'],
    ['HEAD@{yesterday}', { branch: 'HEAD@{yesterday}' }, 'branch'],
    ['@{-1}', { branch: '@{-1}' }, 'branch'],
    ['main@{upstream}', { branch: 'main@{upstream}' }, 'branch'],
    ['a refspec writing another ref', { branch: 'main:refs/heads/pwned' }, 'branch'],
    ['a forced glob refspec', { branch: '+refs/heads/*:refs/heads/*' }, 'branch'],
    ['main~1', { branch: 'main~1' }, 'branch'],
    ['main^', { branch: 'main^' }, 'branch'],
    // The hash.
    ['--upload-pack as the hash', { hash: `--upload-pack=${touch}` }, 'hash'],
    ['-u as the hash', { hash: `-u ${touch}` }, 'hash'],
    ['--output as the hash', { hash: `--output=${marker}` }, 'hash'],
    ['HEAD@{1} as the hash', { hash: 'HEAD@{1}' }, 'hash'],
    ['a range as the hash', { hash: `${HEX40}..${HEX40}` }, 'hash'],
    ['a revision expression as the hash', { hash: `${HEX40}^{commit}` }, 'hash'],
    // The remote (CVE-2022-25860: options through fetch and pull arguments).
    ['--upload-pack as the remote (CVE-2022-25860)', { remote: `--upload-pack=${touch}` }, 'remote'],
    ['-u as the remote', { remote: `-u ${touch}` }, 'remote'],
    ['ext:: as the remote', { remote: extTouch }, 'remote'],
    ['-c core.sshCommand as the remote', { remote: `-c core.sshCommand=${touch}` }, 'remote'],
    ['a url as the remote', { remote: 'https://example.invalid/other.git' }, 'remote'],
    ['.. as the remote', { remote: '..' }, 'remote'],
    ['an option after the remote', { remote: 'origin --upload-pack=x' }, 'remote'],
    // Where the job file is read from, and what is downloaded beside it.
    ['project_directory climbing out', { project_directory: '../../etc' }, 'project_directory'],
    ['project_directory absolute', { project_directory: '/etc' }, 'project_directory'],
    ['project_directory in .git', { project_directory: '.git/hooks' }, 'project_directory'],
    ['remote_files with ext::', { remote_files: { x: extTouch } }, 'remote_files'],
    ['remote_files with file://', { remote_files: { x: 'file:///etc/passwd' } }, 'remote_files'],
  ];

  it.each(CASES)('%s: 400 naming the field', async (_what, fields, field) => {
    const response = await api(master, 'POST', '/v1/build', { json: { ...GOOD, ...fields } });
    expectFailure(response, 400);
    expect(response.body.error).toContain(`"${field}`);
  });

  it('after all of them: no git run, no marker file, nothing in the git cache or the checkouts, no build', async () => {
    expect(existsSync(runs) ? readFileSync(runs, 'utf8') : '').toBe('');
    expect(existsSync(marker)).toBe(false);
    for (const folder of ['git-cache', 'projects']) {
      const path = join(master.base, folder);
      expect(existsSync(path) ? readdirSync(path) : [], folder).toEqual([]);
    }
    expect((await api(master, 'GET', '/v1/build')).body.builds).toEqual([]);
    expect((await api(master, 'GET', '/')).status).toBe(200);
  });

  it('(the spy works: a well-formed source does reach git)', async () => {
    const id = await postBuild(master, GOOD);
    await waitForBuild(master, id);
    expect(readFileSync(runs, 'utf8')).toMatch(/^git /m);
  });
});
