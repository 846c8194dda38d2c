/**
 * Security suite, issue 10 item 5: the original's body-only digest. Every GET has an empty body, so one
 * captured legacy digest would open every read for ever: reads take the signed form only, whatever
 * accept_legacy_digest says. New confs written by the product turn the legacy digest off; a master with it
 * on says so when it starts.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { startMaster } from '../../master/server.ts';
import { signRequest } from '../../shared/auth.ts';
import { loadConf } from '../../shared/conf.ts';
import { createLogger } from '../../shared/log.ts';
import { api, cleanupAll, digest, masterConf, postBuild, startTestMaster, tempDir } from '../support/cluster.ts';

afterEach(cleanupAll);

const DIGEST = 'clusterrunner-message-authentication-digest';
const JOB = { commands: ['true'], atomizers: [{ X: 'seq 1 2' }] };

describe('the legacy digest', () => {
  it('is refused on every GET even when accepted for writes, where the signed form passes', async () => {
    const master = await startTestMaster({ conf: { authenticateReads: true, acceptLegacyDigest: true } });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    for (const path of ['/', '/v1/build', `/v1/build/${id}`, `/v1/build/${id}/subjob`, '/v1/worker', '/v1/queue', '/v1/eventlog', '/v2/builds']) {
      // What a captured legacy GET looks like: the digest of an empty body, valid for any path.
      const legacy = await api(master, 'GET', path, { sign: false, headers: { [DIGEST]: digest(master.secret, '') } });
      expect(legacy.status, path).toBe(401);
      const signed = await api(master, 'GET', path, { sign: false, headers: signRequest(master.secret, 'GET', path) });
      expect(signed.status, path).toBe(200);
    }
    // Writes keep the original's digest for its clients while it is on (the documented trade-off).
    const body = JSON.stringify({ type: 'directory', project_directory: tempDir(), config: JOB });
    const write = await fetch(`${master.url}/v1/build`, { method: 'POST', body, headers: { [DIGEST]: digest(master.secret, body), 'content-type': 'application/json' } });
    expect(write.status).toBeLessThan(300);
  });

  it('is off in a conf the product creates, and existing confs keep what they say', () => {
    const dir = tempDir('cr-conf-');
    const created = join(dir, 'new.conf');
    expect(loadConf({ file: created, role: 'master', env: {}, createIfMissing: true }).acceptLegacyDigest).toBe(false);
    expect(readFileSync(created, 'utf8')).toMatch(/^accept_legacy_digest = false$/m);

    const old = join(dir, 'old.conf');
    writeFileSync(old, '[general]\nsecret = an-older-secret\n', { mode: 0o600 });
    expect(loadConf({ file: old, role: 'master', env: {} }).acceptLegacyDigest).toBe(true);
  });

  it('being on is logged as a warning when the master starts', async () => {
    const lines: string[] = [];
    const destination = new Writable({ write(chunk, _encoding, done) { lines.push(String(chunk)); done(); } });
    const base = tempDir('cr-master-');
    const server = await startMaster({
      conf: masterConf(base, 'a-secret-for-tests', { acceptLegacyDigest: true }),
      log: createLogger({ name: 'master', level: 'info', pretty: false, destination }), version: 'test', host: '127.0.0.1',
    });
    await server.close();
    const warnings = lines.filter((line) => line.includes('accept_legacy_digest is on'));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!).level).toBe(40);
  });
});
