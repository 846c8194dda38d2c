/**
 * The dashboard's server-rendered pages (master/ui/pages.ts, issue 13): user text escaped, inputs refused by
 * name, and pages that stay one page long at 100,000 builds and 10,000 atoms in a build (rows written
 * straight into a real SQLite database, then served by a real master). Also type-checks the browser code
 * (master/ui/static/live.js) against the DOM types, so `npm test` catches a mistake there.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../master/store/index.ts';
import { escapeHtml, html } from '../../master/ui/html.ts';
import { PROJECT_ROOT, cleanupAll, masterConf, startTestMaster, tempDir, type TestMaster } from '../support/cluster.ts';

const NUM_BUILDS = 100_000;
const NUM_SUBJOBS = 100;
const ATOMS_PER_SUBJOB = 100;
const HOSTILE = '<script>window.x=1</script>"><img src=x onerror=alert(1)>';

let master: TestMaster;
/** The build with 10,000 atoms, and the one with hostile text. */
let bigBuild: number;
let hostileBuild: number;

beforeAll(async () => {
  const base = tempDir('cr-dashboard-scale-');
  const secret = 'dashboard-scale-secret';
  const store = openStore(masterConf(base, secret).database);
  const insert = store.db.prepare(
    `INSERT INTO builds (status, request_params, request, project_type, job_name, num_atoms, num_subjobs, completed_subjobs, state_timestamps)
     VALUES (?, ?, '{}', 'directory', ?, ?, ?, ?, ?)`,
  );
  const insertSubjob = store.db.prepare(`INSERT INTO subjobs (build_id, id, state) VALUES (?, ?, 'COMPLETED')`);
  const insertAtom = store.db.prepare(
    `INSERT INTO atoms (build_id, subjob_id, id, variable, value, state, exit_code, actual_time, attempts, worker)
     VALUES (?, ?, ?, 'N', ?, 'COMPLETED', ?, 1.5, 1, 'worker-a')`,
  );
  const now = Math.floor(Date.now() / 1000);
  store.db.transaction(() => {
    for (let index = 0; index < NUM_BUILDS; index++) {
      insert.run(index % 7 === 0 ? 'FAILURE' : 'SUCCESS', JSON.stringify({ type: 'directory', project_directory: `/src/project-${index % 50}` }),
        `job-${index % 20}`, 1, 1, 1, JSON.stringify({ queued: now - (NUM_BUILDS - index), finished: now - (NUM_BUILDS - index) + 1 }));
    }
    bigBuild = Number(insert.run('FAILURE', JSON.stringify({ type: 'directory', project_directory: '/src/big' }), 'big', NUM_SUBJOBS * ATOMS_PER_SUBJOB,
      NUM_SUBJOBS, NUM_SUBJOBS, JSON.stringify({ queued: now - 60, finished: now })).lastInsertRowid);
    for (let subjob = 0; subjob < NUM_SUBJOBS; subjob++) {
      insertSubjob.run(bigBuild, subjob);
      for (let atom = 0; atom < ATOMS_PER_SUBJOB; atom++) insertAtom.run(bigBuild, subjob, atom, String(subjob * ATOMS_PER_SUBJOB + atom), subjob % 10 === 3 && atom % 50 === 7 ? 1 : 0);
    }
    hostileBuild = Number(insert.run('FAILURE', JSON.stringify({ type: 'directory', project_directory: `/src/${HOSTILE}` }), HOSTILE, 1, 1, 1,
      JSON.stringify({ queued: now, finished: now })).lastInsertRowid);
    insertSubjob.run(hostileBuild, 0);
    insertAtom.run(hostileBuild, 0, 0, HOSTILE, 2);
  })();
  store.close();
  master = await startTestMaster({ base, secret });
}, 300_000);

afterAll(cleanupAll);

async function getPage(path: string): Promise<{ status: number; text: string; ms: number }> {
  const started = performance.now();
  const response = await fetch(`${master.url}${path}`);
  const text = await response.text();
  return { status: response.status, text, ms: performance.now() - started };
}

const count = (text: string, needle: string) => text.split(needle).length - 1;

describe('the dashboard pages', () => {
  it('escape every user text: the template escapes values, and a hostile job name and command arrive as text', async () => {
    expect(escapeHtml(`<a href="x" title='y'>&`)).toBe('&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;');
    expect(html`<p title="${'"><b>'}">${['<i>', html`<em>ok</em>`, null, false, 3]}</p>`.text).toBe('<p title="&quot;&gt;&lt;b&gt;">&lt;i&gt;<em>ok</em>3</p>');

    const list = await getPage(`/ui/?q=${encodeURIComponent(`id:${hostileBuild}`)}`);
    expect(list.status).toBe(200);
    expect(list.text).toContain(escapeHtml(HOSTILE));
    const build = await getPage(`/ui/builds/${hostileBuild}`);
    expect(build.status).toBe(200);
    for (const page of [list.text, build.text]) {
      expect(page).not.toContain('<script>window.x');
      expect(page).not.toContain('<img src=x');
      // The only script is the dashboard's own file.
      expect(count(page, '<script')).toBe(1);
      expect(page).toContain('<script type="module" src="/ui/static/live.js"></script>');
    }
    expect(build.text).toContain(escapeHtml(`export N="${HOSTILE}";`));
  });

  it(`list ${NUM_BUILDS.toLocaleString('en')} builds a page of 50 at a time, newest first, with search and pages`, async () => {
    const first = await getPage('/ui/');
    expect(first.status).toBe(200);
    expect(count(first.text, '<tr data-build-id=')).toBe(50);
    expect(first.text).toContain(`data-build-id="${hostileBuild}"`);
    expect(first.text).toContain(`1–50 of ${NUM_BUILDS + 2}`);
    expect(first.text).toContain('href="/ui/?offset=50" rel="next">Older builds');
    const last = await getPage(`/ui/?offset=${NUM_BUILDS}`);
    expect(count(last.text, '<tr data-build-id=')).toBe(2);
    expect(last.text).toContain('data-build-id="1"');
    const search = await getPage(`/ui/?q=${encodeURIComponent('job:job-3 failed')}`);
    expect(search.status).toBe(200);
    expect(count(search.text, '<tr data-build-id=')).toBe(50);
    expect(search.text).not.toContain('status-SUCCESS');
    // A figure for the README, not an assertion: the machine is shared.
    console.log(`dashboard list at ${NUM_BUILDS} builds: first page ${first.ms.toFixed(0)} ms, last page ${last.ms.toFixed(0)} ms, search ${search.ms.toFixed(0)} ms, ${first.text.length} bytes`);
  });

  it(`show a build of ${(NUM_SUBJOBS * ATOMS_PER_SUBJOB).toLocaleString('en')} atoms 100 atoms a page, with the failed ones a filter away`, async () => {
    const page = await getPage(`/ui/builds/${bigBuild}`);
    expect(page.status).toBe(200);
    expect(count(page.text, '<tr data-atom=')).toBe(100);
    expect(page.text).toContain('1–100 of 10000');
    expect(page.text).toContain(`href="/ui/builds/${bigBuild}?offset=100" rel="next">Next atoms`);
    expect(page.text).toContain(`All 20 failed atoms</a>`);
    expect(count(page.text, '<pre class="failed-console"')).toBe(10);
    expect(page.text.length).toBeLessThan(200_000);
    const later = await getPage(`/ui/builds/${bigBuild}?offset=9900`);
    expect(count(later.text, '<tr data-atom=')).toBe(100);
    expect(later.text).toContain('data-atom="99/99"');
    const failed = await getPage(`/ui/builds/${bigBuild}?atoms=failed`);
    expect(count(failed.text, '<tr data-atom=')).toBe(20);
    expect(failed.text).toContain('data-atom="93/57"');
    console.log(`dashboard build page at ${NUM_SUBJOBS * ATOMS_PER_SUBJOB} atoms: ${page.ms.toFixed(0)} ms, ${page.text.length} bytes`);
  });

  it('refuse bad query values by name', async () => {
    const offset = await getPage('/ui/?offset=-1');
    expect(offset.status).toBe(400);
    expect(offset.text).toContain('offset must be a whole number');
    const filter = await getPage(`/ui/builds/${bigBuild}?atoms=some`);
    expect(filter.status).toBe(400);
    expect(filter.text).toContain('atoms must be all, failed or running');
    const unknown = await getPage('/ui/workers?page=2');
    expect(unknown.status).toBe(400);
    expect(unknown.text).toContain('Unknown query parameter \\"page\\"');
    const syntax = await getPage(`/ui/?q=${encodeURIComponent('job:"unclosed')}`);
    expect(syntax.status).toBe(400);
    expect(syntax.text).toMatch(/<p class="error" role="alert" id="search-error">Search: at position \d+/);
    expect((await getPage('/ui/builds/12x')).status).toBe(400);
    expect((await getPage('/ui/builds/999999999')).status).toBe(404);
  });

  it('type-check the browser code with the DOM types (master/ui/tsconfig.client.json)', async () => {
    const tsc = join(PROJECT_ROOT, 'node_modules', '.bin', 'tsc');
    const run = await promisify(execFile)(tsc, ['-p', join(PROJECT_ROOT, 'master', 'ui', 'tsconfig.client.json')], { cwd: PROJECT_ROOT }).then(
      () => ({ code: 0, output: '' }),
      (error: { code?: number; stdout?: string }) => ({ code: error.code ?? 1, output: error.stdout ?? '' }),
    );
    expect(run.output).toBe('');
    expect(run.code).toBe(0);
  }, 120_000);
});
