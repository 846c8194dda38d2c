/**
 * Security suite: artifact archives a hostile (or broken) worker sends the master. A scripted worker runs a
 * real build and answers each atom with one crafted tar.gz: paths out of the folder, links, devices, too
 * many or too big entries, a decompression bomb. Each atom's result is refused as a failure whose console
 * says why, nothing is written outside the atom's own folder, and the master goes on.
 */
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { HeaderData } from 'tar';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, tempDir, waitForBuild } from '../support/cluster.ts';
import { atomsOf, downloadArtifacts, listFiles } from '../support/build-results.ts';
import { closeAllProtocolClients, connectProtocolClient } from '../support/protocol-client.ts';
import { gzipPieces, MiB, tarEntry, tarGz, zeros } from '../support/tar-craft.ts';

afterEach(async () => {
  closeAllProtocolClients();
  await cleanupAll();
});

const MAX_ARTIFACT_BYTES = MiB;
const MAX_ARTIFACT_FILES = 50;

/** Where a path escape would land if it worked: next to the master's base folder. */
const outside = tempDir('cr-outside-');

interface Case {
  readonly label: string;
  readonly archive: () => Buffer | Promise<Buffer>;
  /** What the atom's console must say about the refusal. */
  readonly reason: RegExp;
}

const file = (header: HeaderData, body = 'x') => tarEntry(header, Buffer.from(body));

const CASES: readonly Case[] = [
  { label: 'a parent-folder path', archive: () => tarGz(file({ path: '../../../../pwned-parent' })), reason: /"..\/..\/..\/..\/pwned-parent" climbs out of its folder/ },
  { label: 'a parent-folder path in the middle', archive: () => tarGz(file({ path: 'a/../../../pwned-middle' })), reason: /climbs out of its folder/ },
  { label: 'an absolute path', archive: () => tarGz(file({ path: join(outside, 'pwned-absolute') })), reason: /has an absolute path/ },
  { label: 'a symbolic link out of the folder', archive: () => tarGz(tarEntry({ path: 'escape', type: 'SymbolicLink', linkpath: outside, size: 0 }), file({ path: 'escape/pwned-link' })), reason: /"escape" is a symbolic link/ },
  { label: 'a hard link to /etc/passwd', archive: () => tarGz(tarEntry({ path: 'hard', type: 'Link', linkpath: '/etc/passwd', size: 0 })), reason: /"hard" is a hard link to "\/etc\/passwd"/ },
  { label: 'a character device', archive: () => tarGz(tarEntry({ path: 'null', type: 'CharacterDevice', devmaj: 1, devmin: 3, size: 0 })), reason: /"null" is a CharacterDevice/ },
  { label: 'a FIFO', archive: () => tarGz(tarEntry({ path: 'pipe', type: 'FIFO', size: 0 })), reason: /"pipe" is a FIFO/ },
  { label: 'one entry over max_artifact_bytes', archive: () => tarGz(tarEntry({ path: 'big' }, Buffer.alloc(2 * MiB, 7))), reason: /more than 1048576 bytes \(at "big"\).*max_artifact_bytes/ },
  { label: 'more entries than max_artifact_files', archive: () => tarGz(...Array.from({ length: 200 }, (_, index) => file({ path: `many/${index}` }))), reason: /more than 50 files and folders.*max_artifact_files/ },
  { label: 'a path 300 folders deep', archive: () => tarGz(file({ path: `${'d/'.repeat(300)}deep` })), reason: /nested deeper than 32 levels/ },
  {
    label: 'a decompression bomb (100 MB of zeros in well under 1 MB)',
    archive: () => gzipPieces(function* () {
      yield tarEntry({ path: 'bomb', size: 100 * MiB });
      yield* zeros(100 * MiB);
      yield Buffer.alloc(1024);
    }),
    reason: /more than 1048576 bytes \(at "bomb"\)/,
  },
  { label: 'bytes that are not gzip', archive: () => Buffer.from('this is not an archive'), reason: /not valid gzip/ },
];

describe('archives a worker sends', () => {
  it('are refused atom by atom: a failure that says why, nothing written outside the atom folder', async () => {
    const master = await startTestMaster({ conf: { maxArtifactBytes: MAX_ARTIFACT_BYTES, maxArtifactFiles: MAX_ARTIFACT_FILES } });
    const worker = connectProtocolClient(master.url, { secret: master.secret });
    await worker.register({ executors: CASES.length + 1 });
    const project = tempDir('cr-project-');
    mkdirSync(project, { recursive: true });
    // One atom more than there are cases: a good archive after all the bad ones is still taken.
    const id = await postBuild(master, {
      type: 'directory', project_directory: project,
      config: { commands: ['true'], atomizers: [{ CASE: `seq 1 ${CASES.length + 1}` }] },
    });
    const setup = await worker.next('setup_build');
    worker.sendJson({ type: 'setup_finished', build_id: setup.build_id, ok: true, exit_code: 0, output_tail: '' });

    const archives = await Promise.all(CASES.map((entry) => entry.archive()));
    archives.push(tarGz(file({ path: 'report/ok.txt' }, 'fine')));
    for (let index = 0; index < archives.length; index += 1) {
      const run = await worker.next('run_subjob');
      const ids = { lease_id: run.lease_id, build_id: run.build_id, subjob_id: run.subjob_id };
      const atomId = run.atoms[0]!.atom_id;
      // Which case this atom is comes from its own CASE value, as a real worker's command would see it.
      const caseIndex = Number(run.atoms[0]!.env['CASE']) - 1;
      const archive = archives[caseIndex]!;
      worker.sendJson({ type: 'atom_started', ...ids, atom_id: atomId });
      for (let offset = 0; offset < archive.length; offset += 256 * 1024) {
        const end = Math.min(archive.length, offset + 256 * 1024);
        worker.sendArtifact({ ...ids, atom_id: atomId, final: end === archive.length }, archive.subarray(offset, end));
      }
      worker.sendJson({ type: 'atom_finished', ...ids, atom_id: atomId, exit_code: 0, time_s: 0.1, stop_reason: null, has_artifacts: true });
      worker.sendJson({ type: 'subjob_finished', ...ids });
    }

    const build = await waitForBuild(master, id);
    expect(build.status).toBe('FAILURE');
    const atoms = await atomsOf(master, id);
    for (const atom of atoms) {
      const caseIndex = Number(atom.value) - 1;
      const console = await api(master, 'GET', `/v1/build/${id}/subjob/${atom.subjob_id}/atom/${atom.id}/console?max_lines=50`);
      const text = String(console.body.content);
      if (caseIndex === CASES.length) {
        expect([atom.state, atom.exit_code], 'the good archive').toEqual(['COMPLETED', 0]);
        continue;
      }
      const entry = CASES[caseIndex]!;
      expect(atom.exit_code, entry.label).toBe(1);
      expect(text, entry.label).toContain('artifacts refused');
      expect(text, entry.label).toMatch(entry.reason);
    }

    // Nothing escaped: no file outside, and the results hold only the atoms' own folders.
    expect(readdirSync(outside)).toEqual([]);
    for (const name of ['pwned-parent', 'pwned-middle']) {
      expect(existsSync(join(master.base, name)), name).toBe(false);
      expect(existsSync(join(master.base, 'results', name)), name).toBe(false);
    }
    const unpacked = await downloadArtifacts(master, id);
    const files = listFiles(unpacked);
    expect(files).toContain(`artifact_${CASES.length}_0/report/ok.txt`);
    expect(files.some((path) => /bomb|big|null|pipe|hard|escape/.test(path))).toBe(false);
    expect((await api(master, 'GET', '/')).status).toBe(200);
  });
});
