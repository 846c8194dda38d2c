/**
 * Attachments (SPEC §12) through the real API with a real worker: the paginated listing of what atoms
 * left in ARTIFACT_DIR, per-file downloads with safe headers while and after the build runs, and every
 * path that tries to leave the atom's folder refused (sent raw, as fetch would normalise `..` away).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { expectFailure } from '../support/http-expect.ts';

afterEach(cleanupAll);

/** GET with the path exactly as given: no client-side normalisation of `..`, `//` or escapes. */
function rawGet(master: TestMaster, path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const url = new URL(master.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

// Atom 1 leaves files (nested, a space in a name, a page a browser would run) and passes; atom 2 waits for
// the gate, so the build is still running while atom 1's files are listed and served.
const JOB = (gate: string) => ({
  commands: [
    `if [ "$N" = 1 ]; then mkdir -p "$ARTIFACT_DIR/reports/unit tests" && echo '<testsuite/>' > "$ARTIFACT_DIR/reports/unit tests/junit.xml" && ` +
      `echo '<script>alert(1)</script>' > "$ARTIFACT_DIR/page.html" && printf 'hello' > "$ARTIFACT_DIR/a.txt"; ` +
      `else while [ ! -e ${gate} ]; do sleep 0.05; done; echo late > "$ARTIFACT_DIR/late.log"; fi`,
  ],
  atomizers: [{ N: 'seq 1 2' }],
});

describe('attachments', () => {
  it('are listed page by page and served with safe headers while and after the build runs', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const dir = tempDir();
    const gate = join(dir, 'gate');
    const id = await postBuild(master, { type: 'directory', project_directory: dir, config: JOB(gate) });

    const running = await eventually('atom 1 files listed', async () => {
      const answer = (await api(master, 'GET', `/v2/builds/${id}/attachments`)).body;
      return answer?.total === 3 ? answer : null;
    });
    expect((await api(master, 'GET', `/v1/build/${id}`)).body.build.status).toBe('BUILDING');
    const base = `/v2/builds/${id}/subjobs/0/atoms/0/attachments`;
    expect(running).toEqual({
      attachments: [
        { subjob_id: 0, atom_id: 0, path: 'a.txt', size: 5, url: `${base}/a.txt` },
        { subjob_id: 0, atom_id: 0, path: 'page.html', size: 26, url: `${base}/page.html` },
        { subjob_id: 0, atom_id: 0, path: 'reports/unit tests/junit.xml', size: 13, url: `${base}/reports/unit%20tests/junit.xml` },
      ],
      next: null,
      total: 3,
      child_routes: { attachment: '/v2/builds/[build_id]/subjobs/[subjob_id]/atoms/[atom_id]/attachments/[path]' },
    });
    const text = await rawGet(master, `${base}/a.txt`);
    expect(text.status).toBe(200);
    expect(text.body.toString()).toBe('hello');
    expect(text.headers).toMatchObject({
      'content-type': 'text/plain; charset=utf-8', 'content-length': '5', 'content-disposition': 'attachment; filename="a.txt"; filename*=UTF-8\'\'a.txt',
      'x-content-type-options': 'nosniff',
    });
    const page = await rawGet(master, `${base}/page.html`);
    expect(page.headers['content-type']).toBe('application/octet-stream');
    expect(page.headers['content-disposition']).toMatch(/^attachment;/);
    const junit = await rawGet(master, running.attachments[2].url);
    expect(junit.status).toBe(200);
    expect(junit.headers['content-type']).toBe('application/xml');
    expect(junit.body.toString()).toBe('<testsuite/>\n');

    writeFileSync(gate, '');
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const first = (await api(master, 'GET', `/v2/builds/${id}/attachments?limit=2`)).body;
    expect(first.total).toBe(4);
    expect(first.attachments.map((a: any) => a.path)).toEqual(['a.txt', 'page.html']);
    expect(first.next).toBe(`/v2/builds/${id}/attachments?offset=2&limit=2`);
    const second = (await api(master, 'GET', first.next)).body;
    expect(second.attachments.map((a: any) => `${a.subjob_id}/${a.atom_id}/${a.path}`)).toEqual(['0/0/reports/unit tests/junit.xml', '1/0/late.log']);
    expect(second.next).toBeNull();
    const late = await rawGet(master, `/v2/builds/${id}/subjobs/1/atoms/0/attachments/late.log`);
    expect(late.body.toString()).toBe('late\n');
    expect((await api(master, 'GET', `/v2/builds/${id}`)).body.child_routes.attachments).toBe('/v2/builds/[build_id]/attachments');
  });

  it('refuse paths that leave the atom\'s folder, encoded paths and the master\'s own files', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const dir = tempDir();
    writeFileSync(join(dir, 'gate'), '');
    const id = await postBuild(master, { type: 'directory', project_directory: dir, config: JOB(join(dir, 'gate')) });
    await waitForBuild(master, id);
    const base = `/v2/builds/${id}/subjobs/0/atoms/0/attachments`;
    const refused: [string, number, RegExp][] = [
      [`${base}/../../../../../../etc/passwd`, 400, /"\.\." segments/],
      [`${base}/reports/../a.txt`, 400, /"\.\." segments/],
      [`${base}//etc/passwd`, 400, /not absolute/],
      [`${base}/%2Fetc%2Fpasswd`, 400, /encoded/],
      [`${base}/%2e%2e/%2e%2e/results.tar.gz`, 400, /encoded/],
      [`${base}/..%2f..%2fresults.tar.gz`, 400, /encoded/],
      [`${base}/a.txt%00.png`, 400, /encoded/],
      [`${base}/..%5c..%5cmaster.sqlite`, 400, /encoded/],
      [`${base}/./a.txt`, 400, /"\." segments/],
      [`${base}/`, 404, /No such route/],
      [`${base}/clusterrunner_console_output`, 404, /has no attachment "clusterrunner_console_output"/],
      [`${base}/nope.txt`, 404, /has no attachment "nope.txt" in atom 0\/0/],
      [`${base}/reports`, 404, /has no attachment "reports"/],
      [`/v2/builds/${id}/subjobs/9/atoms/0/attachments/a.txt`, 404, /has no attachment/],
      [`/v2/builds/999/subjobs/0/atoms/0/attachments/a.txt`, 404, /Invalid build id: 999/],
      [`/v2/builds/999/attachments`, 404, /Invalid build id: 999/],
      [`/v2/builds/${id}/attachments?offset=x`, 400, /offset must be an integer/],
      [`/v2/builds/${id}/attachments?path=a`, 400, /Unknown query parameter "path"/],
    ];
    for (const [path, status, message] of refused) {
      const response = await rawGet(master, path);
      expect(response.status, path).toBe(status);
      expect(JSON.parse(response.body.toString()).error, path).toMatch(message);
    }
    expectFailure(await api(master, 'POST', `${base}/a.txt`, { json: {} }), 405);
    expect((await rawGet(master, `${base}/a.txt`)).status).toBe(200);
  });
});
