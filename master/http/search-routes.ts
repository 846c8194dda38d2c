import type { Router } from 'express';
import { badRequest, notFound } from '../../shared/errors.ts';
import { parseBuildSearch } from '../../shared/api/build-search.ts';
import type { Store } from '../store/index.ts';
import type { BuildRecord } from '../store/build-store.ts';
import type { AtomRecord } from '../store/atom-store.ts';
import type { BuildManager } from '../builds/build-manager.ts';
import { isTerminal } from '../model/build-status.ts';
import { createBuildQuery, parseStatusName, type BuildFilters, type BuildQuery, type ListOrder } from '../store/build-query.ts';
import { buildShape } from './shapes.ts';
import { pagination, pathId, queryNumber } from './request-values.ts';
import { testViewFields } from './tests-routes.ts';
import { createFailedAtomsView } from './failed-atoms.ts';
import { flakyAtomsOf } from './flaky-routes.ts';
import { route, type ApiTree } from './api-tree.ts';

/**
 * Finding builds (SPEC §11) on the v2 tree: `GET /v2/builds` with filters, `order`, `next` and `total`;
 * `GET /v2/builds/latest`; `GET /v2/builds/:id/stats`. Registered before the build routes, so that
 * `latest` is not taken for a build id.
 */

export interface SearchRoutesDeps {
  readonly store: Store;
  readonly manager: BuildManager;
}

const FILTER_KEYS = ['status', 'job_name', 'branch', 'repository', 'created_after', 'created_before', 'q'] as const;
const LIST_KEYS = [...FILTER_KEYS, 'order', 'offset', 'limit'] as const;
const LATEST_KEYS = [...FILTER_KEYS, 'done', 'failed'] as const;
/** Longer filter values than this match nothing a build stores (names are at most 255, URLs 4096). */
const MAX_FILTER_CHARS = 4096;

function refuseUnknownKeys(query: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(query)) {
    if (!known.includes(key)) throw badRequest(`Unknown query parameter "${key}". Known parameters: ${known.join(', ')}.`);
  }
}

function queryText(query: Record<string, unknown>, name: string, { allowEmpty = false } = {}): string | undefined {
  const value = query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badRequest(`Query parameter ${name} must be given once, as a single value.`);
  if (!allowEmpty && value.trim() === '') throw badRequest(`Query parameter ${name} must not be empty.`);
  if (value.length > MAX_FILTER_CHARS) throw badRequest(`Query parameter ${name} is longer than ${MAX_FILTER_CHARS} characters.`);
  return value;
}

function queryBoolean(query: Record<string, unknown>, name: string): boolean | undefined {
  const value = queryText(query, name);
  if (value === undefined) return undefined;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw badRequest(`Query parameter ${name} must be true or false, not ${JSON.stringify(value)}.`);
}

/** The filters of SPEC §11 from a query string, each value checked and named when refused. */
export function parseBuildFilters(query: Record<string, unknown>): BuildFilters {
  const status = queryText(query, 'status');
  const q = queryText(query, 'q', { allowEmpty: true });
  const filters: { -readonly [K in keyof BuildFilters]: BuildFilters[K] } = {};
  if (status !== undefined) filters.statuses = status.split(',').map((name) => parseStatusName(name, 'Query parameter status'));
  const jobName = queryText(query, 'job_name');
  if (jobName !== undefined) filters.jobName = jobName;
  const branch = queryText(query, 'branch');
  if (branch !== undefined) filters.branch = branch;
  const repository = queryText(query, 'repository');
  if (repository !== undefined) filters.repository = repository;
  const createdAfter = queryNumber(query, 'created_after');
  if (createdAfter !== undefined) filters.createdAfter = createdAfter;
  const createdBefore = queryNumber(query, 'created_before');
  if (createdBefore !== undefined) filters.createdBefore = createdBefore;
  if (q !== undefined) filters.search = parseBuildSearch(q);
  const isDone = queryBoolean(query, 'done');
  if (isDone !== undefined) filters.isDone = isDone;
  const isFailed = queryBoolean(query, 'failed');
  if (isFailed !== undefined) filters.isFailed = isFailed;
  return filters;
}

function parseOrder(query: Record<string, unknown>): ListOrder {
  const order = queryText(query, 'order');
  if (order === undefined || order === 'asc') return 'asc';
  if (order === 'desc') return 'desc';
  throw badRequest(`Query parameter order must be asc or desc, not ${JSON.stringify(order)}.`);
}

/** The child routes SPEC §11 and §12 add to a v2 build; none on v1, which keeps the original's. */
export function findingChildRoutes(tree: ApiTree): Record<string, string> {
  if (!tree.isPaginated) return {};
  return {
    stats: `${tree.prefix}/${tree.build}/[build_id]/stats`,
    attachments: `${tree.prefix}/${tree.build}/[build_id]/attachments`,
  };
}

/**
 * The build as lists and views show it: the §2.1 shape plus the §11 identity fields. In a list
 * failed_atoms holds at most the first 100 (a list of big failed builds stays small), in a build's own view
 * the first 1,000 (MAX_SHOWN_FAILED_ATOMS); num_failed_atoms counts all.
 */
export function searchableBuildShape(store: Store, query: BuildQuery, manager: BuildManager, build: BuildRecord, buildsPath: string,
  isList: boolean) {
  let failed: AtomRecord[] | null = null;
  let numFailed: number | null = null;
  if (isTerminal(build.status)) {
    // A build's own view is capped too, at 1,000: 50,000 failed atoms made each GET 9.4 MB (issue 10 item 3).
    const page = isList ? query.failedAtoms(build.id) : createFailedAtomsView(store)(build.id);
    failed = [...page.atoms];
    numFailed = page.total;
  }
  const shape = isTerminal(build.status)
    ? buildShape(build, failed, buildsPath)
    : buildShape(build, null, buildsPath, manager.waitingForWorkers(build.id));
  return { ...shape, num_failed_atoms: numFailed, flaky_atoms: isTerminal(build.status) ? flakyAtomsOf(store, build.id) : null, ...query.identity(build.id), ...testViewFields(store, build) };
}

export function addSearchRoutes(router: Router, deps: SearchRoutesDeps, tree: ApiTree): void {
  const { store, manager } = deps;
  const query = createBuildQuery(store.db);
  const buildsPath = `${tree.prefix}/${tree.build}`;
  const load = (id: number): BuildRecord => {
    const build = store.builds.get(id);
    if (!build) throw notFound(`Invalid build id: ${id}.`);
    return build;
  };

  // Only GET: POST /v2/builds goes on to the build routes, which answer every other method.
  router.get(`/${tree.build}`, (req, res) => {
    refuseUnknownKeys(req.query, LIST_KEYS);
    const filters = parseBuildFilters(req.query);
    const order = parseOrder(req.query);
    const { offset, limit } = pagination(req.query);
    store.batcher.flush();
    const { ids, total } = query.list(filters, { order, offset, limit });
    const builds = ids.flatMap((id) => {
      const build = store.builds.get(id);
      return build ? [searchableBuildShape(store, query, manager, build, buildsPath, true)] : [];
    });
    let next: string | null = null;
    if (limit > 0 && offset + limit < total) {
      const params = new URLSearchParams();
      for (const key of LIST_KEYS) {
        const value = req.query[key];
        if (typeof value === 'string' && key !== 'offset' && key !== 'limit') params.set(key, value);
      }
      params.set('offset', String(offset + limit));
      params.set('limit', String(limit));
      next = `${buildsPath}?${params.toString()}`;
    }
    res.json({
      builds, next, total,
      child_routes: { build: `${buildsPath}/[build_id]`, latest: `${buildsPath}/latest` },
    });
  });

  route(router, `/${tree.build}/latest`, {
    get: [(req, res) => {
      refuseUnknownKeys(req.query, LATEST_KEYS);
      const filters = parseBuildFilters(req.query);
      store.batcher.flush();
      const id = query.latest(filters);
      if (id === null) throw notFound('No build matches these filters.');
      res.json({ build: searchableBuildShape(store, query, manager, load(id), buildsPath, false), child_routes: { build: `${buildsPath}/[build_id]` } });
    }],
  });

  route(router, `/${tree.build}/:buildId/stats`, {
    get: [(req, res) => {
      store.batcher.flush();
      const build = load(pathId(req.params['buildId'], 'build'));
      res.json({ stats: query.stats(build.id), child_routes: {} });
    }],
  });
}
