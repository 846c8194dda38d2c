/**
 * Security suite, issue 10 items 7 and 9 (master side) and the record on session ids: the master's secret
 * never leaves in an API answer (atom strings, console pages, error messages, the event log, build fields),
 * remote_files query values are masked in every view, the database and the master's folders are its user's
 * only, and GET /v1/worker shows a digest of a worker's session id, never the value.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';
import { waitForWorkers } from '../support/http-expect.ts';
import { downloadArtifacts, readText } from '../support/build-results.ts';

afterEach(cleanupAll);

describe('the master masks', () => {
  it('its secret in every answer: atom strings, console pages, error messages, the event log, build fields', async () => {
    const secret = 'the-master-secret-0123456789';
    const master = await startTestMaster({ secret });
    await startTestWorker(master);
    // What an atomizer that read the master's conf would print.
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['echo "got $X"'], atomizers: [{ X: `echo ${secret}` }] } });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const failing = await postBuild(master, {
      type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ X: `echo leaked ${secret} >&2; exit 1` }] },
    });
    const failed = await waitForBuild(master, failing);
    expect(failed.status).toBe('ERROR');
    expect(failed.error_message).toContain('leaked ***');

    const paths = [
      `/v1/build/${id}`, `/v1/build/${id}/subjob`, `/v1/build/${id}/subjob/0/atom`, `/v1/build/${id}/subjob/0/atom/0`,
      `/v1/build/${id}/subjob/0/atom/0/console`, `/v1/build/${failing}`, '/v1/build', '/v2/builds', '/v1/eventlog', '/v1/queue',
    ];
    for (const path of paths) {
      const response = await api(master, 'GET', path);
      expect(response.status, path).toBe(200);
      expect(JSON.stringify(response.body), path).not.toContain(secret);
    }
    const atoms = (await api(master, 'GET', `/v1/build/${id}/subjob/0/atom`)).body.atoms;
    expect(atoms[0].command_string).toBe('export X="***";');
    expect((await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/0/console`)).body.content).toBe('got ***\n');
    // An error answer too (the path names it).
    const notFound = await api(master, 'GET', `/v1/nothing-${secret}`);
    expect(JSON.stringify(notFound.body)).not.toContain(secret);
  });

  it('its secret in the archive, the dashboard pages and the event stream', async () => {
    const secret = 'the-master-secret-9876543210';
    const master = await startTestMaster({ secret });
    await startTestWorker(master);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['echo "got $X"'], atomizers: [{ X: `echo ${secret}` }] } });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const archive = await downloadArtifacts(master, id);
    expect(readText(archive, 'artifact_0_0/clusterrunner_command')).toContain('export X="***";');
    expect(readText(archive, 'artifact_0_0/clusterrunner_command')).not.toContain(secret);
    for (const path of [`/ui/builds/${id}`, '/ui/']) {
      const page = await fetch(`${master.url}${path}`);
      expect(page.status, path).toBe(200);
      expect(await page.text(), path).not.toContain(secret);
    }
    // The event log from its start, read until the build's end is in it.
    const controller = new AbortController();
    const response = await fetch(`${master.url}/v2/events?build_id=${id}&since_id=0`, { signal: controller.signal });
    let text = '';
    for await (const bytes of response.body as unknown as AsyncIterable<Uint8Array>) {
      text += Buffer.from(bytes).toString('utf8');
      if (text.includes('BUILD_FINISHED')) break;
    }
    controller.abort();
    expect(text).toContain('BUILD_FINISHED');
    expect(text).not.toContain(secret);
  });

  it('every query value of a remote_files URL, and its credentials, in every view', async () => {
    const master = await startTestMaster();
    const url = 'http://user:pass-word@127.0.0.1:9/file.tgz?X-Amz-Signature=abcdef123456&X-Amz-Date=20260101T000000Z&plain=visible-value';
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), remote_files: { 'file.tgz': url }, config: { commands: ['true'], atomizers: [{ X: 'echo 1' }] } });
    for (const view of [(await api(master, 'GET', `/v1/build/${id}`)).body.build, (await api(master, 'GET', '/v1/build')).body.builds[0],
      (await api(master, 'GET', '/v2/builds')).body.builds[0], (await api(master, 'GET', `/v2/builds/${id}`)).body.build]) {
      expect(view.request_params.remote_files['file.tgz']).toBe('http://***:***@127.0.0.1:9/file.tgz?X-Amz-Signature=***&X-Amz-Date=***&plain=***');
    }
  });
});

describe('the master keeps to itself', () => {
  it('its database (0600) and its folders under base_directory (0700)', async () => {
    const master = await startTestMaster();
    const mode = (path: string) => statSync(path).mode & 0o777;
    expect(mode(join(master.base, 'clusterrunner.db'))).toBe(0o600);
    for (const folder of ['results', 'projects', 'git-cache']) expect(mode(join(master.base, folder)), folder).toBe(0o700);
  });

  it('a worker\'s session id: GET /v1/worker shows a digest of it', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const [view] = await waitForWorkers(master, 1);
    // Workers' session ids are UUIDs; what is shown is not one, and no UUID appears in the view at all.
    expect(view.session_id).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(JSON.stringify(view)).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/);
  });
});
