/**
 * Security suite, issue 10 (for the record): an artifact upload the master refuses leaves nothing it had
 * unpacked before the refusal (names with a newline or U+202E among them) in the atom's folder or the
 * build's archives; the console, which says why, stays.
 */
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { HeaderData } from 'tar';
import { afterEach, describe, expect, it } from 'vitest';
import { createResultsLayout } from '../../master/builds/results-layout.ts';
import { api, cleanupAll, postBuild, startTestMaster, tempDir, waitForBuild } from '../support/cluster.ts';
import { downloadArtifacts, listFiles } from '../support/build-results.ts';
import { closeAllProtocolClients, connectProtocolClient } from '../support/protocol-client.ts';
import { tarEntry, tarGz } from '../support/tar-craft.ts';

afterEach(async () => {
  closeAllProtocolClients();
  await cleanupAll();
});

const file = (header: HeaderData, body = 'x') => tarEntry(header, Buffer.from(body));

describe('a refused artifact upload', () => {
  it('leaves no partial files in the atom folder or the archives', async () => {
    const master = await startTestMaster();
    const worker = connectProtocolClient(master.url, { secret: master.secret });
    await worker.register({ executors: 1 });
    const project = tempDir('cr-project-');
    mkdirSync(project, { recursive: true });
    const id = await postBuild(master, { type: 'directory', project_directory: project, config: { commands: ['true'], atomizers: [{ X: 'echo 1' }] } });
    const setup = await worker.next('setup_build');
    worker.sendJson({ type: 'setup_finished', build_id: setup.build_id, ok: true, exit_code: 0, output_tail: '' });

    // Files the master unpacks, then one it refuses.
    const archive = tarGz(
      file({ path: 'partial.txt' }), file({ path: 'line\nbreak.txt' }), file({ path: 'evil\u202Etxt.exe' }), file({ path: 'dir/nested.txt' }),
      file({ path: '../../../refused' }),
    );
    const run = await worker.next('run_subjob');
    const ids = { lease_id: run.lease_id, build_id: run.build_id, subjob_id: run.subjob_id };
    const atomId = run.atoms[0]!.atom_id;
    worker.sendJson({ type: 'atom_started', ...ids, atom_id: atomId });
    worker.sendJson({ type: 'atom_output', ...ids, atom_id: atomId, data: 'ran\n' });
    worker.sendArtifact({ ...ids, atom_id: atomId, final: true }, archive);
    worker.sendJson({ type: 'atom_finished', ...ids, atom_id: atomId, exit_code: 0, time_s: 0.1, stop_reason: null, has_artifacts: true });
    worker.sendJson({ type: 'subjob_finished', ...ids });

    const build = await waitForBuild(master, id);
    expect(build.status).toBe('FAILURE');
    const console = await api(master, 'GET', `/v1/build/${id}/subjob/${run.subjob_id}/atom/${atomId}/console?max_lines=50`);
    expect(console.body.content).toContain('artifacts refused');

    const dir = createResultsLayout(join(master.base, 'results')).atomDir(id, run.subjob_id, atomId);
    expect(readdirSync(dir)).toEqual(['clusterrunner_console_output']);
    const files = listFiles(await downloadArtifacts(master, id)).map((path) => path.split('/').slice(1).join('/')).filter((path) => path !== '').sort();
    expect(files).toEqual(['clusterrunner_command', 'clusterrunner_console_output', 'clusterrunner_exit_code', 'clusterrunner_time']);
  }, 120_000);
});
