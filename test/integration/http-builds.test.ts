/**
 * The master's HTTP API for builds that run (SPEC §2, §2.1, §2.2, §7, §9): the build, subjob and atom
 * shapes, console paging and live output, artifact archives, the event log and metrics, with real workers
 * running real processes on loopback.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, cleanupAll, eventually, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { expectFailure } from '../support/http-expect.ts';

afterEach(cleanupAll);

const FIVE_ATOMS = {
  commands: ['echo "token is $TOKEN"', 'echo done > $ARTIFACT_DIR/out.txt'],
  atomizers: [{ TOKEN: 'for i in 0 1 2 3 4; do echo "This is atom $i"; done' }],
};
const TEN_LINES = { commands: ['for i in 0 1 2 3 4 5 6 7 8 9; do echo line_$i; done'], atomizers: [{ X: 'echo only' }] };

/** Downloads a file of the API as bytes (api() reads text). */
async function download(master: TestMaster, path: string): Promise<{ status: number; type: string | null; bytes: Buffer }> {
  const response = await fetch(`${master.url}${path}`, { redirect: 'manual' });
  return { status: response.status, type: response.headers.get('content-type'), bytes: Buffer.from(await response.arrayBuffer()) };
}

/** Every file under dir, as relative path ⇒ content. */
function readTree(dir: string, prefix = ''): Record<string, string> {
  const files: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) Object.assign(files, readTree(path, `${prefix}${name}/`));
    else files[`${prefix}${name}`] = readFileSync(path, 'utf8');
  }
  return files;
}

function unpackTarGz(bytes: Buffer): string {
  const dir = tempDir('cr-unpack-');
  writeFileSync(join(dir, 'archive.tar.gz'), bytes);
  const out = join(dir, 'out');
  mkdirSync(out);
  execFileSync('tar', ['-xzf', join(dir, 'archive.tar.gz'), '-C', out]);
  return out;
}

function unpackZip(bytes: Buffer): string {
  const dir = tempDir('cr-unpack-');
  writeFileSync(join(dir, 'archive.zip'), bytes);
  const out = join(dir, 'out');
  execFileSync('python3', ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])', join(dir, 'archive.zip'), out]);
  return out;
}

async function consolePage(master: TestMaster, buildId: number, query: string) {
  return api(master, 'GET', `/v1/build/${buildId}/subjob/0/atom/0/console${query}`);
}

describe('GET /v1/build/:id', () => {
  it('shows every field of SPEC §2.1, before and after the build runs', async () => {
    const master = await startTestMaster();
    const dir = tempDir();
    const id = await postBuild(master, { type: 'directory', project_directory: dir, config: FIVE_ATOMS, priority: 2 });
    // No worker yet: the build is prepared and waits.
    const waiting = await waitForBuild(master, id, (b) => b.status === 'PREPARING' && b.num_atoms === 5);
    expect(waiting).toMatchObject({
      id, status: 'PREPARING', result: null, details: '0 of 5 subjobs are complete (0.0%).', num_atoms: 5, num_subjobs: 5,
      failed_atoms: null, artifacts: null, error_message: null, job_name: expect.any(String),
      request_params: { type: 'directory', project_directory: dir, config: FIVE_ATOMS, priority: 2 },
    });
    expect(Object.keys(waiting.state_timestamps).sort()).toEqual(['preparing', 'queued']);
    expect((await api(master, 'GET', `/v1/build/${id}/artifacts.tar.gz`)).status).toBe(202);

    await startTestWorker(master, { executors: 2 });
    const build = await waitForBuild(master, id);
    const response = await api(master, 'GET', `/v1/build/${id}`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(response.body.build).toEqual(build);
    for (const field of ['id', 'status', 'result', 'details', 'num_atoms', 'num_subjobs', 'failed_atoms', 'artifacts', 'error_message',
      'job_name', 'request_params', 'state_timestamps']) {
      expect(build, field).toHaveProperty(field);
    }
    expect(build).toMatchObject({
      id, status: 'SUCCESS', result: 'SUCCESS', details: '5 of 5 subjobs are complete (100.0%).', num_atoms: 5, num_subjobs: 5,
      failed_atoms: [], artifacts: `/v1/build/${id}/artifacts.tar.gz`, error_message: null,
      request_params: { type: 'directory', project_directory: dir, config: FIVE_ATOMS, priority: 2 },
    });
    const stamps = build.state_timestamps;
    for (const state of ['queued', 'preparing', 'building', 'finished']) expect(stamps[state], state).toEqual(expect.any(Number));
    expect(stamps.queued).toBeLessThanOrEqual(stamps.preparing);
    expect(stamps.preparing).toBeLessThanOrEqual(stamps.building);
    expect(stamps.building).toBeLessThanOrEqual(stamps.finished);
    expect(Math.abs(stamps.finished - Date.now() / 1000)).toBeLessThan(60);
  });

  it('gives an artifacts link that works as given, in every tree', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: TEN_LINES });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    for (const path of [`/v1/build/${id}`, `/build/${id}`, `/v2/builds/${id}`]) {
      const link = (await api(master, 'GET', path)).body.build.artifacts as string;
      const archive = await download(master, link);
      expect(archive.status, `GET ${path} gave the link ${link}`).toBe(200);
      expect(archive.type).toBe('application/octet-stream');
    }
  });

  it('lists the failed atoms of a FAILURE build, with failures.txt in its archive', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(), config: { commands: ['test $((X % 2)) -eq 0'], atomizers: [{ X: 'seq 0 3' }] },
    });
    const build = await waitForBuild(master, id);
    expect(build).toMatchObject({ status: 'FAILURE', result: 'FAILURE', details: '4 of 4 subjobs are complete (100.0%).', error_message: null });
    const failed = [...build.failed_atoms].sort((a: any, b: any) => a.subjob_id - b.subjob_id);
    expect(failed).toEqual([
      expect.objectContaining({ id: 0, subjob_id: 1, command_string: 'export X="1";', exit_code: 1, state: 'COMPLETED' }),
      expect.objectContaining({ id: 0, subjob_id: 3, command_string: 'export X="3";', exit_code: 1, state: 'COMPLETED' }),
    ]);
    const tree = readTree(unpackTarGz((await download(master, `/v1/build/${id}/artifacts.tar.gz`)).bytes));
    expect(tree['failures.txt']).toBe('artifact_1_0\nartifact_3_0');
    expect(tree['artifact_1_0/clusterrunner_exit_code']).toBe('1\n');
    expect(tree['artifact_0_0/clusterrunner_exit_code']).toBe('0\n');
  });

  it('shows request_params as posted, never the credentials in its URLs', async () => {
    const master = await startTestMaster();
    const dir = tempDir();
    const posted = {
      type: 'directory', project_directory: dir, config: FIVE_ATOMS, job_name: 'MyJob', priority: -3,
      remote_files: {
        'a.txt': 'https://alice:pa55word@127.0.0.1:1/a.txt',
        'b.txt': 'https://t0kenvalue@127.0.0.1:1/b.txt',
        'c.txt': 'https://127.0.0.1:1/c.txt?x=1',
      },
    };
    const id = await postBuild(master, posted);
    const response = await api(master, 'GET', `/v1/build/${id}`);
    const params = response.body.build.request_params;
    const { remote_files: shownFiles, ...rest } = params;
    const { remote_files: _files, ...postedRest } = posted;
    expect(rest).toEqual(postedRest);
    expect(response.body.build.job_name).toBe('MyJob');
    expect(Object.keys(shownFiles).sort()).toEqual(['a.txt', 'b.txt', 'c.txt']);
    // Every query value of a remote_files URL is masked (presigned URLs carry their signature there; issue 10 item 9).
    expect(shownFiles['c.txt']).toBe('https://127.0.0.1:1/c.txt?x=***');
    expect(shownFiles['a.txt']).toMatch(/^https:\/\/.*@127\.0\.0\.1:1\/a\.txt$/);
    expect(shownFiles['b.txt']).toMatch(/^https:\/\/.*@127\.0\.0\.1:1\/b\.txt$/);
    for (const path of [`/v1/build/${id}`, '/v1/build', '/v2/builds', '/v1/queue', '/v1/eventlog']) {
      const text = (await api(master, 'GET', path)).text;
      expect(text, path).not.toContain('pa55word');
      expect(text, path).not.toContain('t0kenvalue');
    }
  });

  it('masks the password of a git url in request_params and in the error of its failed fetch', async () => {
    const master = await startTestMaster();
    const id = await postBuild(master, { type: 'git', url: 'https://alice:s3cretpw@127.0.0.1:1/repo.git', config: FIVE_ATOMS });
    const build = await waitForBuild(master, id);
    expect(build.status).toBe('ERROR');
    expect(build.result).toBe('ERROR');
    expect(build.request_params.url).toMatch(/^https:\/\/alice:.*@127\.0\.0\.1:1\/repo\.git$/);
    for (const path of [`/v1/build/${id}`, '/v1/build', '/v1/eventlog']) {
      expect((await api(master, 'GET', path)).text, path).not.toContain('s3cretpw');
    }
  });
});

describe('subjobs and atoms', () => {
  it('serves subjobs, one subjob, its atoms and one atom; unknown ids are 404', async () => {
    const master = await startTestMaster();
    const worker = await startTestWorker(master, { executors: 2, name: 'shape-worker' });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: FIVE_ATOMS });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');

    const list = await api(master, 'GET', `/v1/build/${id}/subjob`);
    expect(list.status).toBe(200);
    const subjobs = list.body.subjobs as any[];
    expect(subjobs.map((subjob) => subjob.id)).toEqual([0, 1, 2, 3, 4]);
    for (const [index, subjob] of subjobs.entries()) {
      expect(subjob).toMatchObject({ id: index, worker: 'shape-worker', state: 'COMPLETED' });
      expect(subjob.command).toContain('echo "token is $TOKEN"');
      expect(subjob.command).toContain('echo done > $ARTIFACT_DIR/out.txt');
      expect(subjob.atoms).toHaveLength(1);
      expect(subjob.atoms[0]).toMatchObject({
        id: 0, subjob_id: index, command_string: `export TOKEN="This is atom ${index}";`, expected_time: null,
        actual_time: expect.any(Number), exit_code: 0, state: 'COMPLETED',
      });
      expect(subjob.atoms[0]).toHaveProperty('expected_time');
    }

    const one = await api(master, 'GET', `/v1/build/${id}/subjob/2`);
    expect(one.status).toBe(200);
    expect(one.body.subjob).toEqual(subjobs[2]);
    const atoms = await api(master, 'GET', `/v1/build/${id}/subjob/2/atom`);
    expect(atoms.status).toBe(200);
    expect(atoms.body.atoms).toEqual(subjobs[2].atoms);
    const atom = await api(master, 'GET', `/v1/build/${id}/subjob/2/atom/0`);
    expect(atom.status).toBe(200);
    expect(atom.body.atom).toEqual(subjobs[2].atoms[0]);
    expect(atom.body.atom.command_string).toBe('export TOKEN="This is atom 2";');

    expectFailure(await api(master, 'GET', `/v1/build/${id}/subjob/5`), 404);
    expectFailure(await api(master, 'GET', `/v1/build/${id}/subjob/99/atom`), 404);
    expectFailure(await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/1`), 404);
    expectFailure(await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/1/console`), 404);
    expectFailure(await api(master, 'GET', `/v1/build/${id + 1}/subjob`), 404, `Invalid build id: ${id + 1}.`);
    expectFailure(await api(master, 'GET', `/v1/build/${id + 1}/subjob/0/atom/0`), 404, `Invalid build id: ${id + 1}.`);
    expectFailure(await api(master, 'GET', `/v1/build/${id}/subjob/x`), 400);
    expectFailure(await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/x`), 400);
    await worker.stop();
  });
});

describe('console output', () => {
  it('pages complete lines as SPEC §2.2 shows', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: TEN_LINES });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const lines = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `line_${from + i}\n`).join('');

    const first = await consolePage(master, id, '?max_lines=5&offset_line=0');
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ offset_line: 0, num_lines: 5, total_num_lines: 10, content: lines(0, 4) });
    expect((await consolePage(master, id, '?max_lines=3&offset_line=4')).body)
      .toEqual({ offset_line: 4, num_lines: 3, total_num_lines: 10, content: lines(4, 6) });
    expect((await consolePage(master, id, '?max_lines=5')).body)
      .toEqual({ offset_line: 5, num_lines: 5, total_num_lines: 10, content: lines(5, 9) });
    expect((await consolePage(master, id, '')).body)
      .toEqual({ offset_line: 0, num_lines: 10, total_num_lines: 10, content: lines(0, 9) });
    expect((await consolePage(master, id, '?max_lines=50&offset_line=8')).body)
      .toEqual({ offset_line: 8, num_lines: 2, total_num_lines: 10, content: lines(8, 9) });
    expect((await consolePage(master, id, '?max_lines=5&offset_line=10')).body)
      .toEqual({ offset_line: 10, num_lines: 0, total_num_lines: 10, content: '' });

    for (const query of ['?max_lines=5&offset_line=11', '?max_lines=0', '?max_lines=-1', '?max_lines=5&offset_line=-1',
      '?max_lines=abc', '?max_lines=2.5', '?offset_line=x', '?offset_line=1.0', '?max_lines=', '?max_lines=1&max_lines=2']) {
      expectFailure(await consolePage(master, id, query), 400);
    }
    // Unversioned and v2 trees serve the same pages.
    expect((await api(master, 'GET', `/build/${id}/subjob/0/atom/0/console?max_lines=3&offset_line=4`)).body).toEqual(
      (await consolePage(master, id, '?max_lines=3&offset_line=4')).body);
    expect((await api(master, 'GET', `/v2/builds/${id}/subjobs/0/atoms/0/console?max_lines=3&offset_line=4`)).body).toEqual(
      (await consolePage(master, id, '?max_lines=3&offset_line=4')).body);
  });

  it('counts only complete lines', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(), config: { commands: ["printf 'a\\nb\\npartial'"], atomizers: [{ X: 'echo 1' }] },
    });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    expect((await consolePage(master, id, '?max_lines=10&offset_line=0')).body)
      .toEqual({ offset_line: 0, num_lines: 2, total_num_lines: 2, content: 'a\nb\n' });
    expect((await consolePage(master, id, '?max_lines=1')).body).toEqual({ offset_line: 1, num_lines: 1, total_num_lines: 2, content: 'b\n' });
  });

  it('serves live output while the atom runs, and the stored output once the worker is gone', async () => {
    const master = await startTestMaster();
    const worker = await startTestWorker(master, { executors: 2 });
    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(), config: { commands: ['echo live_line', 'sleep 30'], atomizers: [{ X: 'echo 1' }] },
    });
    const page = await eventually('the live line on the console', async () => {
      const response = await consolePage(master, id, '?max_lines=10&offset_line=0');
      return response.status === 200 && response.body.content === 'live_line\n' ? response.body : null;
    });
    expect(page).toEqual({ offset_line: 0, num_lines: 1, total_num_lines: 1, content: 'live_line\n' });
    const running = (await api(master, 'GET', `/v1/build/${id}`)).body.build;
    expect(running).toMatchObject({ status: 'BUILDING', result: null, failed_atoms: null, artifacts: null, details: '0 of 1 subjobs are complete (0.0%).' });
    expect((await api(master, 'GET', `/v1/build/${id}/subjob/0/atom/0`)).body.atom).toMatchObject({ state: 'IN_PROGRESS', exit_code: null });
    expect((await api(master, 'GET', `/v1/build/${id}/subjob/0`)).body.subjob.state).toBe('IN_PROGRESS');
    expect((await api(master, 'GET', '/v1/queue')).body.queue.map((b: any) => b.id)).toEqual([id]);
    const [busy] = (await api(master, 'GET', '/v1/worker')).body.workers;
    expect(busy).toMatchObject({ num_executors: 2, num_executors_in_use: 1, current_build_ids: [id], current_build_id: id });

    // Not ready yet: 202, for both archives.
    for (const kind of ['tar.gz', 'zip']) {
      const early = await api(master, 'GET', `/v1/build/${id}/artifacts.${kind}`);
      expect(early.status, kind).toBe(202);
      expect(early.headers.get('content-type')).toMatch(/^application\/json/);
    }

    const cancel = await api(master, 'PUT', `/v1/build/${id}`, { json: { status: 'canceled' } });
    expect(cancel.status).toBe(200);
    const build = await waitForBuild(master, id);
    expect(build).toMatchObject({ status: 'CANCELED', result: 'CANCELED' });
    expect((await download(master, `/v1/build/${id}/artifacts.tar.gz`)).status).toBe(200);

    await worker.stop();
    await eventually('the stopped worker marked dead', async () =>
      ((await api(master, 'GET', '/v1/worker')).body.workers as any[]).every((listed) => !listed.is_alive));
    const after = await consolePage(master, id, '?max_lines=10&offset_line=0');
    expect(after.status).toBe(200);
    expect(after.body.content.startsWith('live_line\n')).toBe(true);
  });

  it('is still served after the worker has stopped', async () => {
    const master = await startTestMaster();
    const worker = await startTestWorker(master);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: TEN_LINES });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const before = await consolePage(master, id, '?max_lines=4&offset_line=2');
    await worker.stop();
    const after = await consolePage(master, id, '?max_lines=4&offset_line=2');
    expect(after.status).toBe(200);
    expect(after.body).toEqual(before.body);
    expect(after.body.content).toBe('line_2\nline_3\nline_4\nline_5\n');
  });
});

describe('artifacts', () => {
  it('serves the archive as tar.gz and zip with one folder per atom, and redirects result to it', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: FIVE_ATOMS });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');

    const tarGz = await download(master, `/v1/build/${id}/artifacts.tar.gz`);
    expect(tarGz.status).toBe(200);
    expect(tarGz.type).toBe('application/octet-stream');
    const zip = await download(master, `/v1/build/${id}/artifacts.zip`);
    expect(zip.status).toBe(200);
    expect(zip.type).toBe('application/octet-stream');

    const fromTar = readTree(unpackTarGz(tarGz.bytes));
    const fromZip = readTree(unpackZip(zip.bytes));
    expect(fromZip).toEqual(fromTar);
    const folders = [...new Set(Object.keys(fromTar).map((path) => path.split('/')[0]))];
    expect(folders).toEqual(['artifact_0_0', 'artifact_1_0', 'artifact_2_0', 'artifact_3_0', 'artifact_4_0']);
    for (let subjob = 0; subjob < 5; subjob++) {
      const folder = `artifact_${subjob}_0`;
      expect(Object.keys(fromTar).filter((path) => path.startsWith(`${folder}/`)).sort()).toEqual([
        `${folder}/clusterrunner_command`, `${folder}/clusterrunner_console_output`, `${folder}/clusterrunner_exit_code`,
        `${folder}/clusterrunner_time`, `${folder}/out.txt`,
      ]);
      expect(fromTar[`${folder}/clusterrunner_command`]).toContain(`export TOKEN="This is atom ${subjob}";`);
      expect(fromTar[`${folder}/clusterrunner_command`]!.endsWith('\n')).toBe(true);
      expect(fromTar[`${folder}/clusterrunner_console_output`]).toContain(`token is This is atom ${subjob}\n`);
      expect(fromTar[`${folder}/clusterrunner_exit_code`]).toBe('0\n');
      expect(fromTar[`${folder}/clusterrunner_time`]).toMatch(/^\d+\.\d{2}\n$/);
      expect(fromTar[`${folder}/out.txt`]).toBe('done\n');
    }

    const result = await api(master, 'GET', `/v1/build/${id}/result`);
    expect(result.status).toBe(302);
    expect(result.headers.get('location')).toBe(`/v1/build/${id}/artifacts.tar.gz`);
    expect((await download(master, '/v1/build/999/artifacts.tar.gz')).status).toBe(404);
    expectFailure(await api(master, 'GET', '/v1/build/999/result'), 404, 'Invalid build id: 999.');
    expectFailure(await api(master, 'GET', '/v1/build/999/artifacts.zip'), 404, 'Invalid build id: 999.');
  });
});

describe('GET /v1/eventlog', () => {
  it('records a build from queue to finish, filtered by since_id and since_timestamp', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 2 });
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: FIVE_ATOMS });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');

    const all = await api(master, 'GET', '/v1/eventlog');
    expect(all.status).toBe(200);
    const events = all.body.events as any[];
    for (const event of events) {
      expect(event).toMatchObject({ __id__: expect.any(Number), __tag__: expect.any(String), __timestamp__: expect.any(Number) });
    }
    const ids = events.map((event) => event.__id__);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
    const tags = new Set(events.map((event) => event.__tag__));
    for (const tag of ['BUILD_REQUEST_QUEUED', 'BUILD_PREPARE_START', 'BUILD_PREPARE_FINISH', 'BUILD_SETUP_START', 'BUILD_SETUP_FINISH',
      'MASTER_TRIGGERED_SUBJOB', 'MASTER_RECEIVED_RESULT', 'ATOM_START', 'ATOM_FINISH', 'WORKER_CONNECTED', 'BUILD_FINISHED']) {
      expect(tags, tag).toContain(tag);
    }
    expect(events.filter((event) => event.__tag__ === 'ATOM_FINISH')).toHaveLength(5);
    expect(events.find((event) => event.__tag__ === 'BUILD_FINISHED').build_id).toBe(id);

    const last = ids.at(-1)!;
    expect((await api(master, 'GET', `/v1/eventlog?since_id=${last}`)).body.events).toEqual([]);
    expect((await api(master, 'GET', `/v1/eventlog?since_id=${ids.at(-3)}`)).body.events).toEqual(events.slice(-2));
    expect((await api(master, 'GET', '/v1/eventlog?since_id=0')).body.events).toEqual(events);

    const middle = events[Math.floor(events.length / 2)];
    const since = (await api(master, 'GET', `/v1/eventlog?since_timestamp=${middle.__timestamp__}`)).body.events as any[];
    expect(since).toEqual(events.filter((event) => event.__timestamp__ > middle.__timestamp__));
    expect(since.length).toBeGreaterThan(0);
    expect((await api(master, 'GET', `/v1/eventlog?since_timestamp=${Date.now() / 1000 + 3600}`)).body.events).toEqual([]);
    expect((await api(master, 'GET', '/v1/eventlog?since_timestamp=0')).body.events).toEqual(events);

    for (const query of ['since_id=abc', 'since_id=-1', 'since_id=1.5', 'since_id=', 'since_timestamp=abc', 'since_timestamp=',
      'since_timestamp=NaN', 'since_timestamp=Infinity', `since_id=1&since_timestamp=1`]) {
      expectFailure(await api(master, 'GET', `/v1/eventlog?${query}`), 400);
    }
  });
});

describe('GET /v1/metrics', () => {
  it('is Prometheus text with the metrics of SPEC §9', async () => {
    const master = await startTestMaster();
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: FIVE_ATOMS });
    await waitForBuild(master, id, (b) => b.status === 'PREPARING' && b.num_atoms === 5);
    const waiting = await api(master, 'GET', '/v1/metrics');
    expect(waiting.status).toBe(200);
    expect(waiting.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(waiting.text).toMatch(/^clusterrunner_queue_depth 1$/m);

    await startTestWorker(master, { executors: 2 });
    expect((await waitForBuild(master, id)).status).toBe('SUCCESS');
    const response = await api(master, 'GET', '/v1/metrics');
    const text = response.text;
    for (const name of ['clusterrunner_builds_total', 'clusterrunner_build_duration_seconds', 'clusterrunner_atoms_total',
      'clusterrunner_queue_depth', 'clusterrunner_workers', 'clusterrunner_executors', 'http_request_duration_seconds']) {
      expect(text, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
    }
    expect(text).toMatch(/^clusterrunner_builds_total\{status="SUCCESS"\} 1$/m);
    expect(text).toMatch(/^clusterrunner_build_duration_seconds_count 1$/m);
    expect(text).toMatch(/^clusterrunner_atoms_total\{[^}]*\} 5$/m);
    expect(text).toMatch(/^clusterrunner_queue_depth 0$/m);
    expect(text).toMatch(/^clusterrunner_workers\{state="idle"\} 1$/m);
    expect(text).toMatch(/^clusterrunner_workers\{state="busy"\} 0$/m);
    expect(text).toMatch(/^clusterrunner_workers\{state="dead"\} 0$/m);
    expect(text).toMatch(/^clusterrunner_executors\{state="idle"\} 2$/m);
    expect(text).toMatch(/^http_request_duration_seconds_count\{[^}]*method="GET"[^}]*status="200"[^}]*\} \d+$/m);
    expect((await api(master, 'GET', '/metrics')).status).toBe(200);
  });
});
