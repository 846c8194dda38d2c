/**
 * Answers in the original ClusterRunner's words, for its clients (`compatibility = original`). Pure
 * functions over our JSON bodies; the shapes of SPEC §2.1 are otherwise unchanged.
 */

type Json = Record<string, unknown>;

/** The original's build status: it had no PREPARING (shown as QUEUED) and one FINISHED with a result. */
const ORIGINAL_STATUS: Readonly<Record<string, string>> = {
  QUEUED: 'QUEUED', PREPARING: 'QUEUED', BUILDING: 'BUILDING',
  SUCCESS: 'FINISHED', FAILURE: 'FINISHED', ERROR: 'ERROR', CANCELED: 'CANCELED',
};

/** Its result is NO_FAILURES only for a build whose every atom passed; canceled and errored builds failed. */
const ORIGINAL_RESULT: Readonly<Record<string, string>> = {
  SUCCESS: 'NO_FAILURES', FAILURE: 'FAILURE', ERROR: 'FAILURE', CANCELED: 'FAILURE',
};

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function originalBuild(build: Json): Json {
  const status = typeof build['status'] === 'string' ? build['status'] : '';
  return {
    ...build,
    status: ORIGINAL_STATUS[status] ?? status,
    result: build['result'] === null ? null : ORIGINAL_RESULT[status] ?? build['result'],
  };
}

function renameKey(routes: Json, from: string, to: string): Json {
  if (!(from in routes)) return routes;
  const renamed: Json = {};
  for (const [key, value] of Object.entries(routes)) renamed[key === from ? to : key] = value;
  return renamed;
}

/**
 * child_routes labelled as the original labelled them: a collection by its plural (`builds`, `subjobs`,
 * `atoms`, `slaves`), a member by its singular. Which node answered is told by the body's own key.
 */
function originalChildRoutes(body: Json, routes: Json): Json {
  if (isObject(body['master'])) {
    let renamed = renameKey(routes, 'build', 'builds');
    const workers = renamed['worker'] ?? renamed['workers'];
    if (typeof workers === 'string' && !('slaves' in renamed)) renamed = { ...renamed, slaves: workers.replace(/worker(s?)$/, 'slave$1') };
    return renamed;
  }
  if (isObject(body['build'])) return renameKey(routes, 'subjob', 'subjobs');
  if (isObject(body['subjob'])) return renameKey(routes, 'atom', 'atoms');
  const workerList = Array.isArray(body['workers']) ? 'worker' : Array.isArray(body['slaves']) ? 'slave' : null;
  if (workerList !== null && !('shutdown' in routes)) {
    const member = Object.values(routes).find((value): value is string => typeof value === 'string');
    if (member !== undefined) return { ...routes, shutdown: member.replace(/\/\[\w+_id\]$/, '/shutdown') };
  }
  return routes;
}

/** The whole body of one answer, translated; anything that is not a JSON object passes as it is. */
export function toOriginalVocabulary(body: unknown): unknown {
  if (!isObject(body)) return body;
  const out: Json = { ...body };
  // Its clients read the lower-case key; ours read STATUS. Both are sent.
  if (typeof out['STATUS'] === 'string' && !('status' in out)) out['status'] = out['STATUS'];
  if (isObject(out['build'])) out['build'] = originalBuild(out['build']);
  for (const list of ['builds', 'queue']) {
    const items = out[list];
    if (Array.isArray(items)) out[list] = items.map((item: unknown) => (isObject(item) ? originalBuild(item) : item));
  }
  if (isObject(out['master']) && Array.isArray(out['master']['workers']) && !('slaves' in out['master'])) {
    out['master'] = { ...out['master'], slaves: out['master']['workers'] };
  }
  if (isObject(out['child_routes'])) out['child_routes'] = originalChildRoutes(body, out['child_routes']);
  return out;
}
