/**
 * Security suite: reads under authenticate_reads. The mutating endpoints' authentication tables, the secret
 * check and the git payloads are in auth-and-injection.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { signRequest } from '../../shared/auth.ts';
import { api, cleanupAll, digest, postBuild, startTestMaster, tempDir } from '../support/cluster.ts';
import { NOT_AUTHENTICATED, expectFailure } from '../support/http-expect.ts';

afterEach(cleanupAll);

const DIGEST = 'ClusterRunner-Message-Authentication-Digest';
const JOB = { commands: ['true'], atomizers: [{ X: 'seq 1 3' }] };

describe('reads', () => {
  it('leaves reads open by default, and requires a digest on them with authenticate_reads', async () => {
    const open = await startTestMaster();
    for (const path of ['/v1/build', '/v1/worker', '/v1/queue', '/v1/eventlog']) expect((await api(open, 'GET', path)).status).toBe(200);

    const master = await startTestMaster({ conf: { authenticateReads: true } });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: JOB });
    for (const path of ['/v1/build', `/v1/build/${id}`, `/v1/build/${id}/subjob`, '/v1/worker', '/v1/queue', '/v1/eventlog', '/v2/builds']) {
      expectFailure(await api(master, 'GET', path), 401, NOT_AUTHENTICATED);
      expectFailure(await api(master, 'GET', path, { headers: { [DIGEST]: 'f'.repeat(128) } }), 401, NOT_AUTHENTICATED);
      // Every GET's body-only digest is the same value: reads take the signed form only (issue 10 item 5).
      expectFailure(await api(master, 'GET', path, { headers: { [DIGEST]: digest(master.secret, '') } }), 401, NOT_AUTHENTICATED);
      const signed = await api(master, 'GET', path, { sign: false, headers: signRequest(master.secret, 'GET', path) });
      expect(signed.status, path).toBe(200);
    }
  });
});
