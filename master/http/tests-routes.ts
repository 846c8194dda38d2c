import type { Router } from 'express';
import { badRequest, notFound } from '../../shared/errors.ts';
import type { Store } from '../store/index.ts';
import type { BuildRecord } from '../store/build-store.ts';
import { TEST_STATUSES, type TestStatus } from '../tests/junit-parser.ts';
import { testStoreOf, type TestSummary } from '../tests/test-store.ts';
import { buildEta, buildPlan, jobPlan } from '../estimates/estimates.ts';
import { pagination, loadBuildRecord, queryInt } from './request-values.ts';
import { route, type ApiTree } from './api-tree.ts';

/**
 * SPEC §15 on the v2 tree: a build's test results (`/v2/builds/:id/tests`), the plan of a build and of a
 * job's next build (`…/plan?executors=N`), and the fields a build view gains (`tests`, `eta_seconds`).
 */

const TEST_LIST_KEYS = ['status', 'q', 'offset', 'limit'] as const;
const PLAN_KEYS = ['executors'] as const;
const JOB_PLAN_KEYS = ['executors', 'repository'] as const;
/** A plan for more executors than this answers nothing a user could act on. */
const MAX_PLAN_EXECUTORS = 10_000;
const MAX_QUERY_CHARS = 1024;
/** Unreadable reports listed with a build's tests; the log has every one. */
const MAX_LISTED_REPORT_ERRORS = 100;

export interface TestRoutesDeps {
  readonly store: Store;
}

function refuseUnknownKeys(query: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(query)) {
    if (!known.includes(key)) throw badRequest(`Unknown query parameter "${key}". Known parameters: ${known.join(', ')}.`);
  }
}

function text(query: Record<string, unknown>, name: string): string | undefined {
  const value = query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badRequest(`Query parameter ${name} must be given once, as a single value.`);
  if (value.length > MAX_QUERY_CHARS) throw badRequest(`Query parameter ${name} is longer than ${MAX_QUERY_CHARS} characters.`);
  return value;
}

function executorsOf(query: Record<string, unknown>): number {
  const executors = queryInt(query, 'executors');
  if (executors === undefined) throw badRequest('Query parameter executors is required: the number of executors to plan for.');
  if (executors < 1 || executors > MAX_PLAN_EXECUTORS) {
    throw badRequest(`Query parameter executors must be between 1 and ${MAX_PLAN_EXECUTORS}, not ${executors}.`);
  }
  return executors;
}

/** What a build view gains (SPEC §15): its tests summary, and while it runs its ETA. */
/**
 * A running build's ETA walks every atom and lease of the build (estimates.ts): 100,000 atoms took longer than a
 * status answer may (issue 18). The view reuses one for this long, and never walks a build planned without history.
 */
const ETA_REFRESH_MS = 2000;
/** Builds whose ETA is remembered; the oldest is forgotten past this (only a recomputation is lost). */
const MAX_ETA_BUILDS = 1000;

interface EtaEntry {
  readonly hasHistory: boolean;
  readonly atMs: number;
  readonly seconds: number | null;
}

const etaCaches = new WeakMap<Store, Map<number, EtaEntry>>();

function viewEta(store: Store, build: BuildRecord): number | null {
  if (build.status !== 'BUILDING' || build.job === null) return null;
  let cache = etaCaches.get(store);
  if (cache === undefined) {
    cache = new Map();
    etaCaches.set(store, cache);
  }
  const nowMs = performance.now();
  const entry = cache.get(build.id);
  if (entry !== undefined && (!entry.hasHistory || nowMs - entry.atMs < ETA_REFRESH_MS)) return entry.seconds;
  const hasHistory = entry?.hasHistory ?? store.atoms.hasExpectedTimes(build.id);
  const seconds = hasHistory ? buildEta(store, build) : null;
  cache.delete(build.id);
  if (cache.size >= MAX_ETA_BUILDS) cache.delete(cache.keys().next().value as number);
  // A null with history is passing (the build holds no executor yet): asked again at the next view, not kept
  // for ETA_REFRESH_MS, which hid the ETA of a build that ran for less than that.
  cache.set(build.id, { hasHistory, atMs: hasHistory && seconds === null ? Number.NEGATIVE_INFINITY : nowMs, seconds });
  return seconds;
}

export function testViewFields(store: Store, build: BuildRecord): { tests: TestSummary; eta_seconds: number | null } {
  return { tests: testStoreOf(store.db).summary(build.id), eta_seconds: viewEta(store, build) };
}

export function addTestRoutes(router: Router, deps: TestRoutesDeps, tree: ApiTree): void {
  const { store } = deps;
  const buildsPath = `${tree.prefix}/${tree.build}`;
  const loadBuild = (raw: string | string[] | undefined): BuildRecord => loadBuildRecord(store, raw);

  route(router, `/${tree.build}/:buildId/tests`, {
    get: [(req, res) => {
      refuseUnknownKeys(req.query, TEST_LIST_KEYS);
      const build = loadBuild(req.params['buildId']);
      const status = text(req.query, 'status');
      if (status !== undefined && !(TEST_STATUSES as readonly string[]).includes(status)) {
        throw badRequest(`Query parameter status must be one of ${TEST_STATUSES.join(', ')}, not ${JSON.stringify(status)}.`);
      }
      const q = text(req.query, 'q');
      const { offset, limit } = pagination(req.query);
      const tests = testStoreOf(store.db);
      const page = tests.list(build.id, { ...(status === undefined ? {} : { status: status as TestStatus }), ...(q === undefined ? {} : { q }), offset, limit });
      let next: string | null = null;
      if (limit > 0 && offset + limit < page.total) {
        const params = new URLSearchParams();
        if (status !== undefined) params.set('status', status);
        if (q !== undefined) params.set('q', q);
        params.set('offset', String(offset + limit));
        params.set('limit', String(limit));
        next = `${buildsPath}/${build.id}/tests?${params.toString()}`;
      }
      res.json({
        tests: page.tests,
        summary: tests.summary(build.id),
        next,
        total: page.total,
        // Reports that could not be read (too big, malformed, a DOCTYPE), each with why: the build goes on.
        report_errors: tests.reportErrors(build.id, MAX_LISTED_REPORT_ERRORS),
        child_routes: {},
      });
    }],
  });

  route(router, `/${tree.build}/:buildId/plan`, {
    get: [(req, res) => {
      refuseUnknownKeys(req.query, PLAN_KEYS);
      const executors = executorsOf(req.query);
      res.json({ ...buildPlan(store, loadBuild(req.params['buildId']), executors), child_routes: {} });
    }],
  });

  route(router, '/jobs/:jobName/plan', {
    get: [(req, res) => {
      refuseUnknownKeys(req.query, JOB_PLAN_KEYS);
      const executors = executorsOf(req.query);
      const repository = text(req.query, 'repository');
      const jobName = String(req.params['jobName']);
      const plan = jobPlan(store, jobName, repository === '' ? undefined : repository, executors);
      if (plan === null) {
        throw notFound(`No planned build of job ${JSON.stringify(jobName)}${repository ? ` in repository ${JSON.stringify(repository)}` : ''} to plan from.`);
      }
      res.json({ job_name: jobName, ...plan, child_routes: {} });
    }],
  });
}
