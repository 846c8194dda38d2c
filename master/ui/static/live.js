// @ts-check
// The dashboard's only script (SPEC §14). The master renders every page (master/ui/pages.ts); this keeps
// it current: it follows the page's event stream, reloads the page's #content from the master after the
// events that change it, appends live console output as text, and sends the operator's sign-in, sign-out
// and cancel with the CSRF token. Type-checked with DOM types: master/ui/tsconfig.client.json.

/** Reloads of #content at most this often, however busy the stream. */
const REFRESH_MS = 500;
/** Characters kept per live console; older output scrolls away (the full output is in the atom's page). */
const MAX_CONSOLE_CHARS = 200_000;

/**
 * @typedef {{ build_id: number, subjob_id: number, atom_id: number, offset: number, data: string }} ConsoleChunk
 */

/** @param {string} text */
function announce(text) {
  const live = document.getElementById('live');
  if (live && live.textContent !== text) live.textContent = text;
}

/** @returns {string} */
function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta instanceof HTMLMetaElement ? meta.content : '';
}

/**
 * @param {string} path
 * @param {Record<string, unknown>} body
 * @returns {Promise<Record<string, unknown>>}
 */
async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrfToken() },
    body: JSON.stringify(body),
  });
  /** @type {Record<string, unknown>} */
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(typeof answer['error'] === 'string' ? answer['error'] : `${response.status} ${response.statusText}`);
  return answer;
}

/** @param {unknown} error */
function reportError(error) {
  announce(`Error: ${error instanceof Error ? error.message : String(error)}`);
}

// ---- live reload of #content -------------------------------------------------------------------------------

let refreshTimer = /** @type {number | null} */ (null);
let isRefreshing = false;
let isRefreshWanted = false;

/** Asks the master for this page again and swaps in its #content, keeping focus where it was. */
async function refresh() {
  if (isRefreshing) {
    isRefreshWanted = true;
    return;
  }
  isRefreshing = true;
  try {
    const response = await fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    // The master escaped every user text in this HTML; a parsed document runs no script.
    const fresh = new DOMParser().parseFromString(await response.text(), 'text/html').getElementById('content');
    const current = document.getElementById('content');
    if (!fresh || !current) return;
    const focused = document.activeElement;
    const focusId = focused instanceof HTMLElement && current.contains(focused) ? focused.id : '';
    current.replaceWith(document.adoptNode(fresh));
    if (focusId !== '') document.getElementById(focusId)?.focus();
    bindActions();
  } catch (error) {
    reportError(error);
  } finally {
    isRefreshing = false;
    if (isRefreshWanted) {
      isRefreshWanted = false;
      scheduleRefresh();
    }
  }
}

function scheduleRefresh() {
  if (refreshTimer !== null) return;
  refreshTimer = window.setTimeout(() => {
    refreshTimer = null;
    void refresh();
  }, REFRESH_MS);
}

// ---- the live console ----------------------------------------------------------------------------------

/** @type {Map<string, HTMLPreElement>} */
const consoles = new Map();

/** @param {ConsoleChunk} chunk */
function appendConsole(chunk) {
  const box = document.getElementById('live-console');
  if (!box) return;
  const key = `${chunk.subjob_id}/${chunk.atom_id}`;
  let pre = consoles.get(key);
  if (!pre) {
    if (consoles.size === 0) box.replaceChildren();
    pre = document.createElement('pre');
    pre.className = 'console';
    pre.tabIndex = 0;
    pre.dataset['atom'] = key;
    const heading = document.createElement('h3');
    heading.textContent = `Subjob ${chunk.subjob_id}, atom ${chunk.atom_id}`;
    const section = document.createElement('section');
    section.append(heading, pre);
    box.append(section);
    consoles.set(key, pre);
  }
  // Text, never markup: a console line holding <script> shows as those characters.
  pre.append(document.createTextNode(chunk.data));
  if ((pre.textContent ?? '').length > MAX_CONSOLE_CHARS) pre.textContent = (pre.textContent ?? '').slice(-MAX_CONSOLE_CHARS / 2);
  pre.scrollTop = pre.scrollHeight;
}

// ---- the stream --------------------------------------------------------------------------------------------

function follow() {
  const main = document.getElementById('main');
  const url = main?.dataset['stream'] ?? '';
  if (!main || url === '') return;
  const refreshOn = (main.dataset['refreshOn'] ?? '').split(',').filter((tag) => tag !== '');
  const stream = new EventSource(url);
  stream.addEventListener('open', () => announce('Live'));
  // EventSource reconnects by itself, sending Last-Event-ID: nothing is missed across a master restart.
  stream.addEventListener('error', () => announce('Reconnecting…'));
  for (const tag of refreshOn) stream.addEventListener(tag, scheduleRefresh);
  stream.addEventListener('CONSOLE', (event) => {
    if (event instanceof MessageEvent && typeof event.data === 'string') appendConsole(/** @type {ConsoleChunk} */ (JSON.parse(event.data)));
  });
  stream.addEventListener('STREAM_CLOSED', () => announce('The master closed the live updates; reconnecting…'));
}

// ---- the operator's actions --------------------------------------------------------------------------------

function bindActions() {
  const cancel = document.getElementById('cancel');
  if (cancel instanceof HTMLButtonElement && cancel.dataset['bound'] !== 'yes') {
    cancel.dataset['bound'] = 'yes';
    cancel.addEventListener('click', () => {
      cancel.disabled = true;
      announce('Canceling…');
      post(`/ui/api/builds/${encodeURIComponent(cancel.dataset['buildId'] ?? '')}/cancel`, {}).then(() => {
        announce('Cancel sent');
        scheduleRefresh();
      }, (error) => {
        cancel.disabled = false;
        reportError(error);
      });
    });
  }
  const retry = document.getElementById('retry');
  if (retry instanceof HTMLButtonElement && retry.dataset['bound'] !== 'yes') {
    retry.dataset['bound'] = 'yes';
    retry.addEventListener('click', () => {
      retry.disabled = true;
      announce('Retrying…');
      // A finished build's page follows no stream: load it again to follow the retried build live.
      post(`/ui/api/builds/${encodeURIComponent(retry.dataset['buildId'] ?? '')}/retry`, {}).then(() => location.reload(), (error) => {
        retry.disabled = false;
        reportError(error);
      });
    });
  }
}

function bindOperator() {
  const form = document.getElementById('sign-in');
  const secret = document.getElementById('secret');
  if (form instanceof HTMLFormElement && secret instanceof HTMLInputElement) {
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      post('/ui/api/sign-in', { secret: secret.value }).then(() => location.reload(), (error) => {
        reportError(error);
        secret.focus();
      });
    });
  }
  const signOut = document.getElementById('sign-out');
  signOut?.addEventListener('click', () => {
    post('/ui/api/sign-out', {}).then(() => location.reload(), reportError);
  });
}

// Links of the earlier dashboard (#/builds/7) still lead somewhere.
const legacy = /^#\/(builds\/\d+|workers|builds)/.exec(location.hash);
if (legacy && legacy[1] !== undefined) location.replace(`/ui/${legacy[1] === 'builds' ? '' : legacy[1]}`);

bindOperator();
bindActions();
follow();
