// The dashboard (SPEC §14). Every value from a build reaches the page through textContent or an
// attribute set by the DOM, never through HTML parsing, so a console line holding markup shows as text.
// @ts-check

/** @type {{ signedIn: boolean, csrf: string | null, authenticateReads: boolean }} */
const operator = { signedIn: false, csrf: null, authenticateReads: false };
/** @type {EventSource | null} */
let stream = null;
/** @type {number | null} */
let refreshTimer = null;
const TERMINAL = ['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'];
const PAGE_SIZE = 50;

/**
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {...(Node | string | null)} children
 */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) if (child !== null) node.append(child);
  return node;
}

/** @param {string} status */
function badge(status) {
  return el('span', { class: `status status-${String(status).replace(/[^A-Z_]/g, '')}` }, String(status));
}

/** @param {string} path */
async function getJson(path) {
  const res = await fetch(path, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ?? `${res.status} ${res.statusText}`);
  return body;
}

/** @param {string} path @param {unknown} body */
async function postJson(path, body) {
  const res = await fetch(path, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': operator.csrf ?? '' },
    body: JSON.stringify(body),
  });
  const answer = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(answer.error ?? `${res.status} ${res.statusText}`);
  return answer;
}

/** @param {...Node} nodes */
function show(...nodes) {
  const main = /** @type {HTMLElement} */ (document.getElementById('main'));
  main.replaceChildren(...nodes);
}

/** @param {string} text */
function setLive(text) {
  const live = document.getElementById('live');
  if (live) live.textContent = text;
}

/** Opens the event stream for this page; events schedule a refresh of the page's data. */
function follow(/** @type {string} */ query, /** @type {(event: MessageEvent) => void} */ onConsole, /** @type {() => void} */ refresh) {
  stream?.close();
  stream = new EventSource(`/v2/events${query}`);
  stream.onopen = () => setLive('Live');
  stream.onerror = () => setLive('Reconnecting…');
  const later = () => {
    if (refreshTimer !== null) return;
    refreshTimer = window.setTimeout(() => { refreshTimer = null; refresh(); }, 200);
  };
  for (const tag of ['BUILD_STATUS', 'BUILD_PREPARE_FINISH', 'ATOM_START', 'ATOM_FINISH', 'WORKER_CONNECTED', 'WORKER_LOST', 'MASTER_TRIGGERED_SUBJOB', 'MASTER_RECEIVED_RESULT', 'BUILD_FINISHED']) {
    stream.addEventListener(tag, later);
  }
  stream.addEventListener('CONSOLE', onConsole);
}

// ---- operator sign-in -------------------------------------------------------------------------------

async function loadSession() {
  const session = await getJson('/ui/api/session');
  operator.signedIn = session.signed_in;
  operator.csrf = session.csrf_token;
  operator.authenticateReads = session.authenticate_reads;
  renderOperator();
}

function renderOperator() {
  const box = /** @type {HTMLElement} */ (document.getElementById('operator'));
  if (operator.signedIn) {
    const out = el('button', { type: 'button', id: 'sign-out' }, 'Sign out');
    out.addEventListener('click', () => {
      postJson('/ui/api/sign-out', {}).then(() => { operator.signedIn = false; operator.csrf = null; renderOperator(); route(); }, reportError);
    });
    box.replaceChildren(el('span', {}, 'Operator'), out);
    return;
  }
  const input = /** @type {HTMLInputElement} */ (el('input', { type: 'password', id: 'secret', autocomplete: 'current-password', required: '' }));
  const form = el('form', { class: 'toolbar', id: 'sign-in' }, el('label', { for: 'secret' }, 'Secret'), input, el('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    postJson('/ui/api/sign-in', { secret: input.value }).then((answer) => {
      operator.signedIn = true;
      operator.csrf = answer.csrf_token;
      renderOperator();
      route();
    }, reportError);
  });
  box.replaceChildren(form);
}

/** @param {unknown} error */
function reportError(error) {
  setLive(`Error: ${error instanceof Error ? error.message : String(error)}`);
}

// ---- builds list ------------------------------------------------------------------------------------

/** @param {any} build */
function progress(build) {
  const match = /^(\d+) of (\d+) subjobs/.exec(build.details ?? '');
  if (!match || TERMINAL.includes(build.status)) return el('span', { class: 'muted' }, build.details ?? '');
  const bar = el('progress', { max: match[2] ?? '1', value: match[1] ?? '0', 'aria-label': `Build ${build.id} progress` });
  const eta = typeof build.eta_seconds === 'number' ? ` ETA ${Math.round(build.eta_seconds)} s` : '';
  return el('span', {}, bar, ` ${build.details}${eta}`);
}

/**
 * The §11 search language, applied to the page the master sent (a master that knows `q` has already
 * narrowed it the same way): terms all match; key:value, -exclusions, "quoted phrases", running/done/failed.
 * @param {string} search
 */
function searchMatcher(search) {
  const terms = search.match(/-?(?:\w+:)?(?:"[^"]*"|\S+)/g) ?? [];
  /** @type {((b: any) => boolean)[]} */
  const tests = terms.map((raw) => {
    const negate = raw.startsWith('-');
    const term = negate ? raw.slice(1) : raw;
    const colon = /^(\w+):(.*)$/.exec(term);
    const unquote = (/** @type {string} */ v) => v.replace(/^"(.*)"$/, '$1').toLowerCase();
    /** @type {(b: any) => boolean} */
    let test;
    if (colon) {
      const [, key = '', value = ''] = colon;
      const v = unquote(value);
      const fields = { id: (/** @type {any} */ b) => String(b.id) === v, status: (/** @type {any} */ b) => String(b.status).toLowerCase() === v,
        job: (/** @type {any} */ b) => String(b.job_name ?? '').toLowerCase().includes(v), branch: (/** @type {any} */ b) => String(b.branch ?? '').toLowerCase().includes(v),
        repo: (/** @type {any} */ b) => `${b.repository ?? ''} ${b.repository_name ?? ''}`.toLowerCase().includes(v) };
      test = /** @type {Record<string, (b: any) => boolean>} */ (fields)[key] ?? (() => false);
    } else if (term === 'running') test = (b) => !TERMINAL.includes(b.status);
    else if (term === 'done') test = (b) => TERMINAL.includes(b.status);
    else if (term === 'failed') test = (b) => b.status === 'FAILURE' || b.status === 'ERROR';
    else {
      const v = unquote(term);
      test = (b) => [b.job_name, b.repository, b.branch, b.commit_sha, b.run_start_reason, b.error_message].some((f) => String(f ?? '').toLowerCase().includes(v));
    }
    return negate ? (/** @type {any} */ b) => !test(b) : test;
  });
  return (/** @type {any} */ b) => tests.every((t) => t(b));
}

async function showBuilds(/** @type {URLSearchParams} */ params, /** @type {() => boolean} */ isCurrent) {
  const search = params.get('q') ?? '';
  const offset = Math.max(0, Number(params.get('offset') ?? 0) || 0);
  const query = new URLSearchParams({ offset: String(offset), limit: String(PAGE_SIZE), order: 'desc' });
  if (search) query.set('q', search);
  const { builds } = await getJson(`/v2/builds?${query}`);
  const matches = searchMatcher(search);
  /** @type {any[]} */
  const rows = builds
    .filter(matches)
    .sort((/** @type {any} */ a, /** @type {any} */ b) => b.id - a.id);

  const table = el('table', { id: 'builds' },
    el('thead', {}, el('tr', {}, ...['Build', 'Job', 'Status', 'Progress', 'Queued'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows.map((b) => el('tr', { 'data-build-id': String(b.id) },
      el('td', {}, el('a', { href: `#/builds/${b.id}` }, `#${b.id}`)),
      el('td', {}, b.job_name ?? ''),
      el('td', { class: 'build-status' }, badge(b.status)),
      el('td', {}, progress(b)),
      el('td', {}, b.state_timestamps?.queued ? new Date(b.state_timestamps.queued * 1000).toLocaleString() : ''),
    ))));
  const pager = el('p', { class: 'toolbar' });
  if (offset > 0) pager.append(el('a', { href: `#/builds?${new URLSearchParams({ q: search, offset: String(Math.max(0, offset - PAGE_SIZE)) })}` }, 'Previous page'));
  if (builds.length === PAGE_SIZE) pager.append(el('a', { href: `#/builds?${new URLSearchParams({ q: search, offset: String(offset + PAGE_SIZE) })}` }, 'Next page'));
  if (!isCurrent()) return;
  // The search form is drawn once per visit: redrawing it on every live update would take the text out
  // from under the person typing.
  let results = document.getElementById('builds-results');
  if (!results) {
    const input = /** @type {HTMLInputElement} */ (el('input', { type: 'search', id: 'search', value: search, placeholder: 'job:name status:failure running' }));
    const form = el('form', { class: 'toolbar', role: 'search' }, el('label', { for: 'search' }, 'Search builds'), input, el('button', { type: 'submit' }, 'Search'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      location.hash = `#/builds?${new URLSearchParams({ q: input.value })}`;
    });
    results = el('div', { id: 'builds-results' });
    show(el('h1', {}, 'Builds'), form, results);
  }
  results.replaceChildren(rows.length ? table : el('p', { class: 'muted', id: 'no-builds' }, 'No builds.'), pager);
}

// ---- one build --------------------------------------------------------------------------------------

/** @type {Map<string, HTMLElement>} */
const consoles = new Map();

/** @param {number} id @param {URLSearchParams} params @param {() => boolean} isCurrent */
async function showBuild(id, params, isCurrent) {
  const offset = Math.max(0, Number(params.get('offset') ?? 0) || 0);
  const { build } = await getJson(`/v1/build/${id}`);
  const { subjobs } = await getJson(`/v2/builds/${id}/subjobs?offset=${offset}&limit=${PAGE_SIZE}`);

  const head = el('div', { class: 'toolbar' }, el('h1', {}, `Build #${build.id}`), el('span', { id: 'build-status' }, badge(build.status)));
  if (operator.signedIn && !TERMINAL.includes(build.status)) {
    const cancel = el('button', { type: 'button', id: 'cancel' }, 'Cancel build');
    cancel.addEventListener('click', () => postJson(`/ui/api/builds/${id}/cancel`, {}).then(() => route(), reportError));
    head.append(cancel);
  }
  const facts = el('p', {}, `${build.job_name ?? ''} · `, progress(build));
  if (build.artifacts) facts.append(' · ', el('a', { href: build.artifacts }, 'Artifacts (tar.gz)'));
  const parts = [head, facts];
  if (build.error_message) parts.push(el('pre', { class: 'error', id: 'error-message' }, build.error_message));

  const failed = build.failed_atoms ?? [];
  if (failed.length) {
    parts.push(el('h2', {}, 'Failed atoms'));
    for (const atom of failed.slice(0, 20)) {
      const tail = await getJson(`/v1/build/${id}/subjob/${atom.subjob_id}/atom/${atom.id}/console?max_lines=30`).catch(() => ({ content: '' }));
      parts.push(el('h3', {}, `Subjob ${atom.subjob_id}, atom ${atom.id}: exit ${atom.exit_code}`), el('pre', { class: 'failed-console' }, tail.content));
    }
  }

  parts.push(el('h2', {}, 'Live console'));
  const live = el('div', { id: 'live-console' });
  for (const pre of consoles.values()) live.append(pre.parentElement ?? pre);
  if (consoles.size === 0) live.append(el('p', { class: 'muted' }, TERMINAL.includes(build.status) ? 'The build has ended.' : 'No output yet.'));
  parts.push(live);

  parts.push(el('h2', {}, 'Subjobs and atoms'));
  const rows = [];
  for (const subjob of subjobs) {
    for (const atom of subjob.atoms) {
      rows.push(el('tr', {},
        el('td', {}, String(subjob.id)), el('td', {}, String(atom.id)),
        el('td', {}, el('code', {}, atom.command_string)),
        el('td', {}, badge(atom.state === 'COMPLETED' && atom.exit_code !== 0 && atom.exit_code !== null ? 'FAILED' : atom.state)),
        el('td', {}, atom.exit_code === null ? '' : String(atom.exit_code)),
        el('td', {}, String(atom.attempts ?? '')),
        el('td', {}, atom.worker ?? subjob.worker ?? ''),
      ));
    }
  }
  parts.push(el('table', { id: 'atoms' },
    el('thead', {}, el('tr', {}, ...['Subjob', 'Atom', 'Command', 'State', 'Exit', 'Attempts', 'Worker'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows)));
  const pager = el('p', { class: 'toolbar' });
  if (offset > 0) pager.append(el('a', { href: `#/builds/${id}?offset=${Math.max(0, offset - PAGE_SIZE)}` }, 'Previous subjobs'));
  if (subjobs.length === PAGE_SIZE) pager.append(el('a', { href: `#/builds/${id}?offset=${offset + PAGE_SIZE}` }, 'Next subjobs'));
  parts.push(pager);
  if (!isCurrent()) return;
  show(...parts);
}

/** @param {MessageEvent} event */
function appendConsole(event) {
  const chunk = JSON.parse(event.data);
  const key = `${chunk.subjob_id}/${chunk.atom_id}`;
  let pre = consoles.get(key);
  if (!pre) {
    pre = el('pre', { class: 'console', 'data-atom': key });
    consoles.set(key, pre);
    const box = el('section', {}, el('h3', {}, `Subjob ${chunk.subjob_id}, atom ${chunk.atom_id}`), pre);
    const live = document.getElementById('live-console');
    if (live) {
      live.querySelector('p.muted')?.remove();
      live.append(box);
    }
  }
  pre.append(chunk.data);
  pre.scrollTop = pre.scrollHeight;
}

// ---- workers ----------------------------------------------------------------------------------------

async function showWorkers(/** @type {() => boolean} */ isCurrent) {
  const { workers } = await getJson('/v2/workers?limit=200');
  const table = el('table', { id: 'workers' },
    el('thead', {}, el('tr', {}, ...['Worker', 'Alive', 'Executors in use', 'Builds', 'Draining'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...workers.map((/** @type {any} */ w) => el('tr', {},
      el('td', {}, w.name), el('td', {}, w.is_alive ? 'yes' : 'no'),
      el('td', {}, `${w.num_executors_in_use} of ${w.num_executors}`),
      el('td', {}, (w.current_build_ids ?? []).map((/** @type {number} */ b) => `#${b}`).join(' ')),
      el('td', {}, w.is_in_shutdown_mode ? 'yes' : 'no'),
    ))));
  if (!isCurrent()) return;
  show(el('h1', {}, 'Workers'), workers.length ? table : el('p', { class: 'muted' }, 'No workers connected.'));
}

// ---- routing ----------------------------------------------------------------------------------------

let currentPage = '';
/** Reloads the current page's data with its current parameters (the stream's events call it). */
let reload = () => undefined;
let loadGeneration = 0;

function route() {
  const [path = '', queryText = ''] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(queryText);
  for (const link of document.querySelectorAll('nav a')) link.removeAttribute('aria-current');
  if (operator.authenticateReads && !operator.signedIn) {
    stream?.close();
    show(el('h1', {}, 'Sign in'), el('p', {}, 'This master requires authentication to read; sign in with its secret above.'));
    return;
  }
  const buildMatch = /^\/builds\/(\d+)$/.exec(path);
  const page = buildMatch ? `build:${buildMatch[1]}` : path === '/workers' ? 'workers' : 'builds';
  const isNewPage = page !== currentPage;
  currentPage = page;
  let load;
  if (buildMatch) {
    const id = Number(buildMatch[1]);
    if (isNewPage) consoles.clear();
    load = (/** @type {() => boolean} */ isCurrent) => showBuild(id, params, isCurrent).catch(reportError);
    if (isNewPage) follow(`?build_id=${id}&console=true`, appendConsole, () => reload());
  } else if (page === 'workers') {
    document.getElementById('nav-workers')?.setAttribute('aria-current', 'page');
    load = (/** @type {() => boolean} */ isCurrent) => showWorkers(isCurrent).catch(reportError);
    if (isNewPage) follow('?tags=WORKER_CONNECTED,WORKER_LOST,ATOM_START,ATOM_FINISH,BUILD_FINISHED', () => undefined, () => reload());
  } else {
    document.getElementById('nav-builds')?.setAttribute('aria-current', 'page');
    load = (/** @type {() => boolean} */ isCurrent) => showBuilds(params, isCurrent).catch(reportError);
    if (isNewPage) follow('?tags=BUILD_STATUS,BUILD_PREPARE_FINISH,MASTER_RECEIVED_RESULT', () => undefined, () => reload());
  }
  // Loads overlap (a stream event, then a search): only the latest may draw, or an older answer would
  // overwrite a newer page.
  reload = () => {
    const generation = ++loadGeneration;
    void load(() => generation === loadGeneration);
  };
  reload();
}

window.addEventListener('hashchange', route);
loadSession().then(route, (error) => { reportError(error); route(); });
