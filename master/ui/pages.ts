/**
 * The dashboard's pages, rendered on the master (SPEC §14): the builds list, one build, the workers. Every
 * page is complete HTML a browser can show without script; master/ui/static/live.js only keeps it current
 * from the event stream. Lists are paged (50 builds, 100 atoms a page), so a master with 100,000 builds or a
 * build of 10,000 atoms costs one page's rows per request.
 */
import { join } from 'node:path';
import type { Store } from '../store/index.ts';
import type { BuildRecord } from '../store/build-store.ts';
import type { AtomRecord } from '../store/atom-store.ts';
import type { BuildQuery } from '../store/build-query.ts';
import type { ResultsLayout } from '../builds/results-layout.ts';
import { CONSOLE_FILE } from '../builds/results-layout.ts';
import { readConsolePage } from '../builds/console-files.ts';
import { buildEta } from '../estimates/estimates.ts';
import type { WorkerRegistry } from '../workers/worker-registry.ts';
import type { PoolManager } from '../pools/pool-manager.ts';
import { atomCommandString } from '../../shared/job-config.ts';
import { isTerminalStatus } from '../../shared/api/statuses.ts';
import { html, type SafeHtml } from './html.ts';

export const BUILDS_PAGE_SIZE = 50;
export const ATOMS_PAGE_SIZE = 100;
/** Failed atoms shown with their console tail on a build's page; the atoms table lists every one. */
const FAILED_ATOMS_SHOWN = 10;
const FAILED_TAIL_LINES = 30;
/** Workers on one page: a pool is rarely larger, and the list says when it is cut. */
const MAX_WORKERS_SHOWN = 500;

export interface PageContext {
  readonly store: Store;
  readonly query: BuildQuery;
  readonly layout: ResultsLayout;
  readonly registry: WorkerRegistry;
  /** The master's pools (SPEC §13), shown on the workers page; none without them. */
  readonly pools?: { readonly current: PoolManager | null } | undefined;
}

/** The operator's session as a page shows it: the CSRF token goes in a meta tag for live.js's POSTs. */
export interface Viewer {
  readonly csrfToken: string | null;
}

interface Frame {
  readonly title: string;
  readonly nav: 'builds' | 'workers' | null;
  /** The /v2/events URL this page follows, and the tags after which it reloads its #content. */
  readonly stream: string | null;
  readonly refreshOn: readonly string[];
}

/**
 * The newest event id the page was drawn after: its stream resumes from there (since_id), so an event
 * between this render and the stream's start (a short build ending) still reaches the page.
 */
function latestEventId(ctx: PageContext): number {
  return ctx.store.db.prepare<[], { id: number }>('SELECT coalesce(max(id), 0) AS id FROM events').get()!.id;
}

function streamUrl(ctx: PageContext, query: string): string {
  return `/v2/events?${query}&since_id=${latestEventId(ctx)}`;
}

export function page(frame: Frame, viewer: Viewer, body: SafeHtml, status = ''): SafeHtml {
  const current = (name: Frame['nav']) => (frame.nav === name ? html` aria-current="page"` : '');
  const operator = viewer.csrfToken !== null
    ? html`<span>Signed in as operator</span><button type="button" id="sign-out">Sign out</button>`
    : html`<form id="sign-in" class="toolbar"><label for="secret">Secret</label>
<input type="password" id="secret" name="secret" autocomplete="current-password" required maxlength="1024">
<button type="submit">Sign in</button></form>`;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${frame.title} · ClusterRunner</title>
<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/static/style.css">
${viewer.csrfToken !== null && html`<meta name="csrf-token" content="${viewer.csrfToken}">`}
<script type="module" src="/ui/static/live.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header>
<a class="brand" href="/ui/">ClusterRunner</a>
<nav aria-label="Pages"><a href="/ui/" id="nav-builds"${current('builds')}>Builds</a><a href="/ui/workers" id="nav-workers"${current('workers')}>Workers</a></nav>
<div id="operator" class="operator">${operator}</div>
</header>
<main id="main" tabindex="-1" data-stream="${frame.stream ?? ''}" data-refresh-on="${frame.refreshOn.join(',')}">
${body}
</main>
<p id="live" class="live" role="status" aria-live="polite">${status}</p>
</body>
</html>
`;
}

export function signInRequiredPage(viewer: Viewer): SafeHtml {
  return page({ title: 'Sign in', nav: null, stream: null, refreshOn: [] }, viewer,
    html`<h1>Sign in</h1><p>This master requires authentication to read (authenticate_reads); sign in with its secret above.</p>`);
}

function badge(status: string, id?: string): SafeHtml {
  return html`<span class="status status-${status.replace(/[^A-Z_]/g, '')}"${id === undefined ? '' : html` id="${id}"`}>${status}</span>`;
}

function time(seconds: number | undefined): SafeHtml {
  if (seconds === undefined || !Number.isFinite(seconds)) return html``;
  const iso = new Date(seconds * 1000).toISOString();
  return html`<time datetime="${iso}">${iso.slice(0, 19).replace('T', ' ')} UTC</time>`;
}

/** `1m05s`, `42s`, `2h03m`. */
function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** A running build's bar (atoms done of all) with the ETA when the master can estimate one; counts once done. */
function progress(ctx: PageContext, build: BuildRecord): SafeHtml {
  const stats = ctx.query.stats(build.id).atoms;
  const done = stats.passed + stats.failed + stats.canceled;
  const total = build.numAtoms;
  const failed = stats.failed > 0 ? html`, <span class="failed-count">${stats.failed} failed</span>` : '';
  if (isTerminalStatus(build.status) || total === null) {
    return total === null ? html`<span class="muted">${build.status === 'QUEUED' || build.status === 'PREPARING' ? 'atoms not known yet' : ''}</span>`
      : html`<span class="muted">${total} ${total === 1 ? 'atom' : 'atoms'}</span>${failed}`;
  }
  const eta = buildEta(ctx.store, build);
  return html`<progress max="${Math.max(1, total)}" value="${done}" aria-label="Build ${build.id}: ${done} of ${total} atoms done"></progress>
<span>${done}/${total} atoms${failed}${eta !== null && html` · <span class="eta">about ${duration(eta)} left</span>`}</span>`;
}

function source(build: BuildRecord): string {
  const params = build.requestParams;
  const text = (key: string) => (typeof params[key] === 'string' ? params[key] : '');
  if (build.projectType === 'git') return [text('url'), text('branch') && `branch ${text('branch')}`].filter(Boolean).join(' · ');
  return text('project_directory');
}

function pager(label: string, link: (offset: number) => string, offset: number, pageSize: number, total: number, names: [string, string]): SafeHtml {
  if (total <= pageSize && offset === 0) return html``;
  const previous = offset > 0 ? html`<a href="${link(Math.max(0, offset - pageSize))}" rel="prev">${names[0]}</a>` : '';
  const next = offset + pageSize < total ? html`<a href="${link(offset + pageSize)}" rel="next">${names[1]}</a>` : '';
  const last = Math.min(total, offset + pageSize);
  return html`<nav class="toolbar pager" aria-label="${label}">${previous}<span class="muted">${total === 0 ? 0 : offset + 1}–${last} of ${total}</span>${next}</nav>`;
}

// ---- builds list ---------------------------------------------------------------------------------------

export interface BuildsListInput {
  readonly q: string;
  readonly offset: number;
  /** The ids of this page and how many match (null with `error` when the search did not parse). */
  readonly ids: readonly number[];
  readonly total: number;
  readonly error: string | null;
}

export function buildsPage(ctx: PageContext, viewer: Viewer, input: BuildsListInput): SafeHtml {
  const link = (offset: number) => `/ui/?${new URLSearchParams({ ...(input.q === '' ? {} : { q: input.q }), ...(offset === 0 ? {} : { offset: String(offset) }) })}`;
  const rows = input.ids.flatMap((id) => {
    const build = ctx.store.builds.get(id);
    if (!build) return [];
    return [html`<tr data-build-id="${build.id}">
<td><a href="/ui/builds/${build.id}">#${build.id}</a></td>
<td>${build.jobName ?? ''}</td>
<td class="build-status">${badge(build.status)}</td>
<td>${progress(ctx, build)}</td>
<td class="source">${source(build)}</td>
<td>${time(build.stateTimestamps['queued'])}</td>
</tr>`];
  });
  const table = rows.length === 0
    ? html`<p class="muted" id="no-builds">${input.q === '' ? 'No builds yet.' : 'No build matches this search.'}</p>`
    : html`<table id="builds"><caption class="visually-hidden">Builds, newest first</caption>
<thead><tr><th scope="col">Build</th><th scope="col">Job</th><th scope="col">Status</th><th scope="col">Progress</th><th scope="col">Source</th><th scope="col">Queued</th></tr></thead>
<tbody>${rows}</tbody></table>`;
  const body = html`<h1>Builds</h1>
<form class="toolbar" role="search" method="get" action="/ui/">
<label for="search">Search builds</label>
<input type="search" id="search" name="q" value="${input.q}" maxlength="1024" aria-describedby="search-help" placeholder="job:unit status:failure running">
<button type="submit">Search</button>
</form>
<p id="search-help" class="muted help">All terms must match: job:, branch:, repo:, id:, status: with a value; running, done, failed; "a phrase"; -term excludes.</p>
<div id="content">
${input.error !== null && html`<p class="error" role="alert" id="search-error">${input.error}</p>`}
${table}
${pager('Pages of builds', link, input.offset, BUILDS_PAGE_SIZE, input.total, ['Newer builds', 'Older builds'])}
</div>`;
  return page({ title: 'Builds', nav: 'builds', stream: streamUrl(ctx, 'tags=BUILD_STATUS,ATOM_FINISH'), refreshOn: ['BUILD_STATUS', 'ATOM_FINISH'] }, viewer, body);
}

// ---- one build -----------------------------------------------------------------------------------------

export type AtomFilter = 'all' | 'failed' | 'running';

export interface BuildPageInput {
  readonly build: BuildRecord;
  readonly atomsOffset: number;
  readonly atomFilter: AtomFilter;
}

const ATOM_FILTER_SQL: Record<AtomFilter, string> = {
  all: '',
  failed: ' AND exit_code IS NOT NULL AND exit_code != 0',
  running: ` AND state = 'IN_PROGRESS'`,
};

interface AtomRow {
  subjob_id: number;
  id: number;
  variable: string;
  value: string;
  state: AtomRecord['state'];
  exit_code: number | null;
  actual_time: number | null;
  attempts: number;
  worker: string | null;
}

/** One page of a build's atoms, read with the (build_id, subjob_id, id) key: cost grows with the page, not the build. */
function atomsPage(ctx: PageContext, buildId: number, filter: AtomFilter, offset: number): { rows: AtomRow[]; total: number } {
  const where = `build_id = ?${ATOM_FILTER_SQL[filter]}`;
  const rows = ctx.store.db.prepare<[number, number, number], AtomRow>(
    `SELECT subjob_id, id, variable, value, state, exit_code, actual_time, attempts, worker FROM atoms WHERE ${where} ORDER BY subjob_id, id LIMIT ? OFFSET ?`,
  ).all(buildId, ATOMS_PAGE_SIZE, offset);
  const total = ctx.store.db.prepare<[number], { n: number }>(`SELECT count(*) AS n FROM atoms WHERE ${where}`).get(buildId)!.n;
  return { rows, total };
}

async function consoleTail(ctx: PageContext, buildId: number, atom: AtomRecord): Promise<string> {
  try {
    const tail = await readConsolePage(join(ctx.layout.atomDir(buildId, atom.subjobId, atom.id), CONSOLE_FILE), FAILED_TAIL_LINES, null);
    const skipped = tail.total_num_lines - tail.num_lines;
    return `${skipped > 0 ? `… ${skipped} earlier lines\n` : ''}${tail.content}`;
  } catch {
    return '(no console output kept)';
  }
}

export async function buildPage(ctx: PageContext, viewer: Viewer, input: BuildPageInput): Promise<SafeHtml> {
  const { build } = input;
  const isDone = isTerminalStatus(build.status);
  const base = `/ui/builds/${build.id}`;
  const link = (offset: number) => `${base}?${new URLSearchParams({ ...(input.atomFilter === 'all' ? {} : { atoms: input.atomFilter }), ...(offset === 0 ? {} : { offset: String(offset) }) })}`;

  const failedPage = isDone ? ctx.query.failedAtoms(build.id) : { atoms: [], total: 0 };
  const failedSections: SafeHtml[] = [];
  for (const atom of failedPage.atoms.slice(0, FAILED_ATOMS_SHOWN)) {
    const command = atomCommandString(atom.variable, atom.value);
    failedSections.push(html`<section class="failed-atom" aria-labelledby="failed-${atom.subjobId}-${atom.id}">
<h3 id="failed-${atom.subjobId}-${atom.id}">Subjob ${atom.subjobId}, atom ${atom.id}: exit code ${atom.exitCode ?? ''}</h3>
<p><code>${command}</code></p>
<pre class="failed-console" tabindex="0">${await consoleTail(ctx, build.id, atom)}</pre>
</section>`);
  }
  const moreFailed = failedPage.total > FAILED_ATOMS_SHOWN
    ? html`<p><a href="${base}?atoms=failed">All ${failedPage.total} failed atoms</a> are in the table below.</p>` : '';

  const atoms = atomsPage(ctx, build.id, input.atomFilter, input.atomsOffset);
  const atomRows = atoms.rows.map((atom) => {
    const failed = atom.state === 'COMPLETED' && atom.exit_code !== null && atom.exit_code !== 0;
    return html`<tr data-atom="${atom.subjob_id}/${atom.id}">
<td>${atom.subjob_id}</td><td>${atom.id}</td><td><code>${atomCommandString(atom.variable, atom.value)}</code></td>
<td>${badge(failed ? 'FAILED' : atom.state)}</td><td>${atom.exit_code ?? ''}</td><td>${atom.attempts}</td>
<td>${atom.actual_time === null ? '' : duration(atom.actual_time)}</td><td>${atom.worker ?? ''}</td></tr>`;
  });
  const filters = (['all', 'failed', 'running'] as const).map((name) =>
    html`<a href="${base}${name === 'all' ? '' : `?atoms=${name}`}"${input.atomFilter === name ? html` aria-current="true"` : ''}>${name === 'all' ? 'All atoms' : name === 'failed' ? 'Failed' : 'Running'}</a>`);

  const times = build.stateTimestamps;
  const cancel = viewer.csrfToken !== null && !isDone
    ? html`<button type="button" id="cancel" data-build-id="${build.id}">Cancel build</button>` : '';
  // SPEC §10: a finished build that did not pass (or was stopped) runs its failed atoms again, as the same build.
  const retry = viewer.csrfToken !== null && isDone && build.status !== 'SUCCESS' && build.job !== null
    ? html`<button type="button" id="retry" data-build-id="${build.id}">Retry failed atoms</button>` : '';
  const body = html`<div id="content">
<div class="toolbar"><h1>Build #${build.id}</h1>${badge(build.status, 'build-status')}${cancel}${retry}</div>
<dl class="facts">
<dt>Job</dt><dd>${build.jobName ?? '(not known yet)'}</dd>
<dt>Source</dt><dd>${build.projectType} ${source(build)}</dd>
<dt>Progress</dt><dd>${progress(ctx, build)}</dd>
<dt>Queued</dt><dd>${time(times['queued'])}</dd>
${times['finished'] !== undefined && html`<dt>Finished</dt><dd>${time(times['finished'])}</dd>`}
${build.artifactsReady && html`<dt>Results</dt><dd><a href="/v1/build/${build.id}/artifacts.tar.gz">Artifacts (tar.gz)</a> · <a href="/v2/builds/${build.id}/attachments">Attachments</a></dd>`}
</dl>
${build.errorMessage !== null && html`<h2>Error</h2><pre class="error" id="error-message" tabindex="0">${build.errorMessage}</pre>`}
${failedSections.length > 0 && html`<h2>Failed atoms</h2>${failedSections}${moreFailed}`}
<h2 id="atoms-heading">Subjobs and atoms</h2>
<nav class="toolbar" aria-label="Which atoms">${filters}</nav>
${atoms.rows.length === 0 ? html`<p class="muted" id="no-atoms">${build.numAtoms === null ? 'The atoms are not known until the build is prepared.' : 'No atom here.'}</p>`
    : html`<table id="atoms" aria-labelledby="atoms-heading"><thead><tr><th scope="col">Subjob</th><th scope="col">Atom</th><th scope="col">Command</th><th scope="col">State</th><th scope="col">Exit</th><th scope="col">Attempts</th><th scope="col">Time</th><th scope="col">Worker</th></tr></thead>
<tbody>${atomRows}</tbody></table>`}
${pager('Pages of atoms', link, input.atomsOffset, ATOMS_PAGE_SIZE, atoms.total, ['Previous atoms', 'Next atoms'])}
</div>
<h2>Live console</h2>
<div id="live-console">${isDone ? html`<p class="muted">The build has ended.</p>` : html`<p class="muted">Output of running atoms appears here.</p>`}</div>`;
  return page({
    title: `Build #${build.id}`, nav: 'builds',
    stream: isDone ? null : streamUrl(ctx, `build_id=${build.id}&console=true`),
    refreshOn: ['BUILD_STATUS', 'ATOM_START', 'ATOM_FINISH'],
  }, viewer, body);
}

// ---- workers -------------------------------------------------------------------------------------------

function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit++;
  }
  return `${size.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

const WORKERS_PAGE_EVENTS = ['WORKER_CONNECTED', 'WORKER_LOST', 'WORKER_HEALTH_CHANGED', 'POOL_WORKER_STARTED', 'POOL_WORKER_STOPPED',
  'POOL_WORKER_START_FAILED', 'ATOM_START', 'ATOM_FINISH', 'BUILD_STATUS'];

function poolsTable(pools: PoolManager | null): SafeHtml {
  const views = pools === null ? [] : pools.names().map((name) => pools.view(name)).filter((view) => view !== null);
  if (views.length === 0) return html``;
  const rows = views.map((pool) => html`<tr data-pool="${pool.name}"><td>${pool.name}</td><td>${pool.provider}</td>
<td>${pool.min_workers}–${pool.max_workers}</td><td>${pool.desired_workers}</td><td>${pool.connected_workers}</td><td>${pool.busy_workers}</td>
<td>${pool.idle_workers}</td><td>${pool.starting_workers}</td><td>${pool.executors.in_use} of ${pool.executors.total}</td>
<td>${pool.last_error === null ? '' : pool.last_error.message}</td></tr>`);
  return html`<h2>Pools</h2>
<table id="pools"><caption class="visually-hidden">Worker pools</caption><thead><tr><th scope="col">Pool</th><th scope="col">Provider</th>
<th scope="col">Size</th><th scope="col">Desired</th><th scope="col">Connected</th><th scope="col">Busy</th><th scope="col">Idle</th>
<th scope="col">Starting</th><th scope="col">Executors in use</th><th scope="col">Last start failure</th></tr></thead><tbody>${rows}</tbody></table>`;
}

export function workersPage(ctx: PageContext, viewer: Viewer): SafeHtml {
  const all = ctx.registry.listed();
  const rows = all.slice(0, MAX_WORKERS_SHOWN).map((worker) => {
    const builds = worker.currentBuildIds();
    const health = !worker.isAlive ? 'LOST' : worker.isDraining ? 'DRAINING' : worker.health().toUpperCase();
    const machine = worker.machine;
    const load = machine.load1 === undefined ? '' : `${machine.load1.toFixed(2)}${machine.cpuCount === undefined ? '' : ` / ${machine.cpuCount} cores`}`;
    return html`<tr data-worker-id="${worker.id}"><td>${worker.name}</td><td>${worker.pool ?? ''}</td><td>${[...worker.labels].sort().join(', ')}</td>
<td>${badge(health)}${machine.reason === null ? '' : html` <span class="muted">${machine.reason}</span>`}</td>
<td><meter min="0" max="${worker.numExecutors}" value="${worker.executorsInUse}" aria-label="${worker.name}: ${worker.executorsInUse} of ${worker.numExecutors} executors in use"></meter> ${worker.executorsInUse} of ${worker.numExecutors}</td>
<td>${load}</td><td>${bytes(machine.memoryAvailableBytes)}</td><td>${bytes(machine.diskFreeBytes)}</td>
<td>${builds.map((id, index) => html`${index > 0 ? ' ' : ''}<a href="/ui/builds/${id}">#${id}</a>`)}</td></tr>`;
  });
  const body = html`<h1>Workers</h1>
<div id="content">
${poolsTable(ctx.pools?.current ?? null)}
${rows.length === 0 ? html`<p class="muted" id="no-workers">No workers connected.</p>`
    : html`<table id="workers"><caption class="visually-hidden">Connected workers</caption><thead><tr><th scope="col">Worker</th><th scope="col">Pool</th><th scope="col">Labels</th><th scope="col">Health</th><th scope="col">Executors in use</th><th scope="col">Load</th><th scope="col">Memory free</th><th scope="col">Disk free</th><th scope="col">Builds</th></tr></thead><tbody>${rows}</tbody></table>`}
${all.length > MAX_WORKERS_SHOWN && html`<p class="muted">Showing ${MAX_WORKERS_SHOWN} of ${all.length} workers.</p>`}
</div>`;
  return page({
    title: 'Workers', nav: 'workers',
    stream: streamUrl(ctx, `tags=${WORKERS_PAGE_EVENTS.join(',')}`),
    refreshOn: WORKERS_PAGE_EVENTS,
  }, viewer, body);
}
