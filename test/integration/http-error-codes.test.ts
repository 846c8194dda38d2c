/**
 * Every code of shared/api/error-codes.ts, produced by a real request: supertest against a real master in
 * this process (and, for INTERNAL, which no route of a healthy master produces, the master's own error
 * middleware behind a route that throws). Each answer is `{"STATUS": "FAILURE", "error", "code"}` with the
 * catalogue's status for its code.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import express from 'express';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { signRequest } from '../../shared/auth.ts';
import { ERROR_CODES, type ErrorCode } from '../../shared/api/error-codes.ts';
import { errorAnswerSchema } from '../../shared/api/views.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { errorHandler } from '../../master/http/http-errors.ts';
import { cleanupAll, startTestMaster, tempDir, type TestMaster } from '../support/cluster.ts';

const mounted: string[] = [];

afterEach(async () => {
  await cleanupAll();
  for (const dir of mounted.splice(0)) execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
});

/** The answer is the contract's error answer, with the code and the catalogue's status for it. */
function expectCode(response: request.Response, code: ErrorCode): void {
  expect(response.status, `${response.status} ${response.text.slice(0, 300)}`).toBe(ERROR_CODES[code].status);
  expect(response.headers['content-type']).toMatch(/^application\/json/);
  const answer = errorAnswerSchema.parse(response.body);
  expect(answer.code).toBe(code);
  expect(answer.error.length).toBeGreaterThan(0);
}

/** A signed POST, as the CLI sends it. */
function post(master: TestMaster, path: string, body: string): request.Test {
  return request(master.url).post(path).set({ ...signRequest(master.secret, 'POST', path, body), 'Content-Type': 'application/json' }).send(body);
}

describe('error codes', () => {
  it('BAD_REQUEST: a body that is not JSON, not UTF-8, or a path with a broken %-escape', async () => {
    const master = await startTestMaster();
    expectCode(await post(master, '/v1/build', '{"type": '), 'BAD_REQUEST');
    const notUtf8 = Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]);
    const path = '/v1/build';
    // Sent as bytes: with a JSON content type, supertest would serialise the Buffer itself.
    expectCode(await request(master.url).post(path).set({ ...signRequest(master.secret, 'POST', path, notUtf8), 'Content-Type': 'application/octet-stream' }).send(notUtf8), 'BAD_REQUEST');
    expectCode(await request(master.url).get('/v1/build/%E0%A4%A'), 'BAD_REQUEST');
  });

  it('VALIDATION_FAILED: an unknown key, a missing or wrong field, a bad id or query value, each named', async () => {
    const master = await startTestMaster();
    const unknown = await post(master, '/v1/build', JSON.stringify({ type: 'git', url: 'https://example.com/r.git', colour: 'red' }));
    expectCode(unknown, 'VALIDATION_FAILED');
    expect(unknown.body.error).toContain('colour');
    expectCode(await post(master, '/v1/build', JSON.stringify({ type: 'git' })), 'VALIDATION_FAILED');
    const wrongField = await post(master, '/v1/build', JSON.stringify({ type: 'directory', project_directory: tempDir(), priority: 'high' }));
    expectCode(wrongField, 'VALIDATION_FAILED');
    expect(wrongField.body.error).toContain('priority');
    expectCode(await request(master.url).get('/v1/build/abc'), 'VALIDATION_FAILED');
    expectCode(await request(master.url).get('/v2/builds?limit=ten'), 'VALIDATION_FAILED');
    expectCode(await post(master, '/v1/worker/shutdown', JSON.stringify({ workers: [] })), 'VALIDATION_FAILED');
  });

  it('UNAUTHORIZED: no signature, or a wrong one', async () => {
    const master = await startTestMaster();
    const body = JSON.stringify({ type: 'directory', project_directory: tempDir() });
    expectCode(await request(master.url).post('/v1/build').set('Content-Type', 'application/json').send(body), 'UNAUTHORIZED');
    const forged = signRequest('not-the-secret', 'POST', '/v1/build', body);
    expectCode(await request(master.url).post('/v1/build').set({ ...forged, 'Content-Type': 'application/json' }).send(body), 'UNAUTHORIZED');
  });

  it('NOT_FOUND, METHOD_NOT_ALLOWED and SESSION_EXPIRED', async () => {
    const master = await startTestMaster();
    expectCode(await request(master.url).get('/v1/build/999'), 'NOT_FOUND');
    expectCode(await request(master.url).get('/no/such/route'), 'NOT_FOUND');
    const wrongMethod = await request(master.url).delete('/v1/build');
    expectCode(wrongMethod, 'METHOD_NOT_ALLOWED');
    expect(wrongMethod.headers['allow']).toBe('GET, POST');
    expectCode(await request(master.url).get('/v1').set('Expected-Session-Id', 'an-older-master'), 'SESSION_EXPIRED');
  });

  it('CONFLICT: a retry of a build that has not ended', async () => {
    const master = await startTestMaster();
    // No worker: the build waits, never terminal.
    const body = JSON.stringify({ type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ N: 'echo 1' }] } });
    const created = await post(master, '/v1/build', body);
    expect(created.status).toBe(202);
    expectCode(await post(master, `/v1/build/${created.body.build_id as number}/retry`, '{}'), 'CONFLICT');
  });

  it('PAYLOAD_TOO_LARGE: a body over max_body_bytes', async () => {
    const master = await startTestMaster({ conf: { maxBodyBytes: 1024 } });
    const body = JSON.stringify({ type: 'directory', project_directory: tempDir(), job_name: 'x'.repeat(2048) });
    expectCode(await post(master, '/v1/build', body), 'PAYLOAD_TOO_LARGE');
  });

  it('STORE_WRITE_FAILED: the database on a full disk refuses the new build, and the master goes on serving', async (context) => {
    const dir = tempDir('cr-db-tmpfs-');
    mkdirSync(dir, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'ignore' });
    } catch {
      context.skip('this machine does not let the tests mount a tmpfs');
    }
    mounted.push(dir);
    const master = await startTestMaster({ conf: { database: join(dir, 'master.db') } });
    // Fill what is left of the disk; SQLite then cannot grow its journal or its file.
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${join(dir, 'filler')}`, 'bs=64k'], { stdio: 'ignore' });
    } catch {
      // dd stops with "No space left on device": that is the point.
    }
    const big = JSON.stringify({ type: 'directory', project_directory: tempDir(), atoms_override: Array.from({ length: 200 }, (_, i) => `atom ${i} ${'y'.repeat(200)}`) });
    expectCode(await post(master, '/v1/build', big), 'STORE_WRITE_FAILED');
    expect((await request(master.url).get('/v1/build')).status).toBe(200);
    writeFileSync(join(dir, 'filler'), '');
    expect((await post(master, '/v1/build', big)).status).toBe(202);
  });

  it('INTERNAL: an error the master did not expect is answered with no detail, and logged', async () => {
    const logged: unknown[] = [];
    const log = createSilentLogger();
    const spy = Object.assign(Object.create(log) as typeof log, { error: (...args: unknown[]) => { logged.push(args); } });
    const app = express();
    app.get('/boom', () => {
      throw new Error('secret internals');
    });
    app.use(errorHandler(spy));
    const response = await request(app).get('/boom');
    expectCode(response, 'INTERNAL');
    expect(response.text).not.toContain('secret internals');
    expect(logged).toHaveLength(1);
  });
});
