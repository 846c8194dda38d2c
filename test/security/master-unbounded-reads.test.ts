/**
 * Security suite, issue 10 item 3: reads bounded on the master. A console page is served from the file by a
 * line index (never the whole file in memory per request), with at most 10,000 lines and 1 MiB per answer;
 * while six readers page a 60 MiB console, the master still answers; build lists cap failed_atoms.
 */
import { open, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { createResultsLayout } from '../../master/builds/results-layout.ts';
import { MAX_CONSOLE_PAGE_BYTES, MAX_CONSOLE_PAGE_LINES, readConsolePage } from '../../master/builds/console-files.ts';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

/** A console file of `megabytes` MiB of numbered 64-byte lines, written in 1 MiB pieces. */
async function writeBigConsole(path: string, megabytes: number): Promise<number> {
  const handle = await open(path, 'w');
  const linesPerMiB = (1024 * 1024) / 64;
  for (let m = 0; m < megabytes; m++) {
    const lines = Array.from({ length: linesPerMiB }, (_, i) => `${String(m * linesPerMiB + i).padStart(12, '0')} ${'x'.repeat(50)}\n`);
    await handle.write(lines.join(''));
  }
  await handle.close();
  return megabytes * linesPerMiB;
}

describe('console pages', () => {
  it('a page of a big file names the right lines, and a longer line than an answer is cut and marked', async () => {
    const path = join(tempDir(), 'clusterrunner_console_output');
    const total = await writeBigConsole(path, 3);
    const page = await readConsolePage(path, 3, 40_000);
    expect(page).toMatchObject({ offset_line: 40_000, num_lines: 3, total_num_lines: total });
    expect(page.content.split('\n').slice(0, 3).map((line) => Number(line.slice(0, 12)))).toEqual([40_000, 40_001, 40_002]);
    const tail = await readConsolePage(path, 999_999_999, null);
    expect(tail.num_lines).toBe(MAX_CONSOLE_PAGE_LINES);
    expect(tail.offset_line).toBe(total - MAX_CONSOLE_PAGE_LINES);

    const long = join(tempDir(), 'clusterrunner_console_output');
    await writeFile(long, `short\n${'y'.repeat(3 * MAX_CONSOLE_PAGE_BYTES)}\nend\n`);
    const cut = await readConsolePage(long, 10, 1);
    expect(cut.num_lines).toBe(1);
    expect(Buffer.byteLength(cut.content)).toBeLessThan(MAX_CONSOLE_PAGE_BYTES + 100);
    expect(cut.content).toMatch(/line cut at \d+ bytes per answer\]\n$/);
    expect((await readConsolePage(long, 10, 2)).content).toBe('end\n');
    // A file that grows is counted on from where the index stopped; one cut short is indexed afresh.
    await writeFile(long, 'more\n', { flag: 'a' });
    expect((await readConsolePage(long, 10, 2)).content).toBe('end\nmore\n');
    await writeFile(long, `${'z'.repeat(10)}\n`.repeat(500_000), { flag: 'r+' });
    expect((await readConsolePage(long, 1, null)).total_num_lines).toBe(500_000);
    await writeFile(long, 'a\nb\n');
    expect(await readConsolePage(long, 10, null)).toEqual({ offset_line: 0, num_lines: 2, total_num_lines: 2, content: 'a\nb\n' });
  });

  it('six parallel readers of a 60 MiB console with max_lines=999999999 get bounded answers while the master keeps answering', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['echo hi'], atomizers: [{ X: 'echo 1' }] } });
    expect((await waitForBuild(master, id, undefined, 120_000)).status).toBe('SUCCESS');
    const dir = createResultsLayout(join(master.base, 'results')).atomDir(id, 0, 0);
    await mkdir(dir, { recursive: true });
    const total = await writeBigConsole(join(dir, 'clusterrunner_console_output'), 60);

    const readers = Array.from({ length: 6 }, (_, i) => api(master, 'GET', `/v1/build/${id}/subjob/0/atom/0/console?max_lines=999999999${i % 2 === 0 ? '' : '&offset_line=0'}`));
    // Asserted: it answers (how soon depends on the machine).
    expect((await api(master, 'GET', '/v1')).status).toBe(200);
    for (const response of await Promise.all(readers)) {
      expect(response.status).toBe(200);
      expect(response.body.total_num_lines).toBe(total);
      expect(response.body.num_lines).toBeLessThanOrEqual(MAX_CONSOLE_PAGE_LINES);
      expect(Buffer.byteLength(response.body.content)).toBeLessThanOrEqual(MAX_CONSOLE_PAGE_BYTES);
    }
  }, 300_000);
});

describe('failed_atoms', () => {
  it('holds the first 100 in /v1/build and /v2/builds, the first 1,000 in a build\'s own view, with num_failed_atoms counting all', async () => {
    // 1,200 failed atoms without running 1,200 processes: the atoms are made by a real build on a master with
    // no worker, and their results written into its database before a second master opens it.
    const first = await startTestMaster();
    const id = await postBuild(first, { type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ N: 'seq 1 1200' }] } });
    await waitForBuild(first, id, (build) => build.num_atoms === 1200, 120_000);
    await first.close();
    const db = new Database(join(first.base, 'clusterrunner.db'));
    db.prepare("UPDATE atoms SET state = 'COMPLETED', exit_code = 3, attempts = 1 WHERE build_id = ?").run(id);
    db.prepare("UPDATE subjobs SET state = 'COMPLETED' WHERE build_id = ?").run(id);
    db.prepare("UPDATE builds SET status = 'FAILURE', completed_subjobs = num_subjobs WHERE id = ?").run(id);
    db.close();
    const master = await startTestMaster({ base: first.base, secret: first.secret });
    for (const view of [(await api(master, 'GET', '/v1/build')).body.builds[0], (await api(master, 'GET', '/v2/builds')).body.builds[0]]) {
      expect(view.failed_atoms).toHaveLength(100);
      expect(view.num_failed_atoms).toBe(1200);
    }
    for (const view of [(await api(master, 'GET', `/v1/build/${id}`)).body.build, (await api(master, 'GET', `/v2/builds/${id}`)).body.build]) {
      expect(view.status).toBe('FAILURE');
      expect(view.failed_atoms).toHaveLength(1000);
      expect(view.num_failed_atoms).toBe(1200);
    }
  }, 300_000);
});
