import type { Router } from 'express';
import { badRequest } from '../../shared/errors.ts';
import { atomCommandString } from '../../shared/job-config.ts';
import type { Store } from '../store/index.ts';
import type { Db } from '../store/database.ts';
import { testStoreOf } from '../tests/test-store.ts';
import { queryInt } from './request-values.ts';
import { route, type ApiTree } from './api-tree.ts';

/**
 * Flaky atoms and tests (SPEC §15): ones that failed, then passed on a retry in the same build. A build lists
 * its own (`flaky_atoms`); `GET /v2/flaky?job_name=&builds=N` ranks them over the last N builds of a job.
 */

/** A build's view lists this many flaky atoms at most, like its failed atoms. */
export const MAX_SHOWN_FLAKY_ATOMS = 1_000;
const DEFAULT_FLAKY_BUILDS = 20;
const MAX_FLAKY_BUILDS = 500;
/** Atoms and tests listed in a ranking, each. */
const MAX_RANKED = 100;
const MAX_JOB_NAME_CHARS = 1024;
const FLAKY_KEYS = ['job_name', 'builds'] as const;

interface FlakyAtomRow { subjob_id: number; id: number; variable: string; value: string }
interface RankedRow { kind: 'atom' | 'test'; a: string; b: string; flaky_count: number; last_build_id: number }

type FlakyAtomsView = (buildId: number) => { subjob_id: number; atom_id: number; command_string: string }[];
const views = new WeakMap<Db, FlakyAtomsView>();

/** The build's flaky atoms by (subjob, atom), bounded; one query on the atoms' primary key. */
export function flakyAtomsOf(store: Store, buildId: number): ReturnType<FlakyAtomsView> {
  let view = views.get(store.db);
  if (!view) {
    const select = store.db.prepare<[number, number], FlakyAtomRow>(
      `SELECT subjob_id, id, variable, value FROM atoms
       WHERE build_id = ? AND failed_attempts > 0 AND state = 'COMPLETED' AND exit_code = 0 ORDER BY subjob_id, id LIMIT ?`,
    );
    view = (id) => select.all(id, MAX_SHOWN_FLAKY_ATOMS)
      .map((row) => ({ subjob_id: row.subjob_id, atom_id: row.id, command_string: atomCommandString(row.variable, row.value) }));
    views.set(store.db, view);
  }
  return view(buildId);
}

export function addFlakyRoutes(router: Router, deps: { readonly store: Store }, tree: ApiTree): void {
  const { db } = deps.store;
  testStoreOf(db); // creates test_results where no test report was stored yet
  // One statement: the job's last N builds (build_facts_by_job_name), their atoms that failed then passed
  // (the atoms' primary key), and their tests whose latest run passed after an earlier attempt failed
  // (test_results_by_atom), counted per atom string and per test.
  const rank = db.prepare<[string, number, number, number], RankedRow>(`
    WITH recent AS (
      SELECT id FROM build_facts WHERE job_name = ? COLLATE NOCASE ORDER BY id DESC LIMIT ?
    ), atom_flakes AS (
      SELECT 'atom' AS kind, a.variable AS a, a.value AS b, count(*) AS flaky_count, max(a.build_id) AS last_build_id
      FROM recent r JOIN atoms a ON a.build_id = r.id
      WHERE a.failed_attempts > 0 AND a.state = 'COMPLETED' AND a.exit_code = 0
      GROUP BY a.variable, a.value ORDER BY flaky_count DESC, last_build_id DESC LIMIT ?
    ), test_flakes AS (
      SELECT 'test' AS kind, t.classname AS a, t.name AS b, count(DISTINCT t.build_id) AS flaky_count, max(t.build_id) AS last_build_id
      FROM recent r JOIN test_results t ON t.build_id = r.id
      WHERE t.is_latest = 1 AND t.status = 'passed' AND EXISTS (
        SELECT 1 FROM test_results e WHERE e.build_id = t.build_id AND e.subjob_id = t.subjob_id AND e.atom_id = t.atom_id
          AND e.attempt < t.attempt AND e.status IN ('failed', 'errored') AND e.name = t.name AND e.classname = t.classname)
      GROUP BY t.classname, t.name ORDER BY flaky_count DESC, last_build_id DESC LIMIT ?
    )
    SELECT * FROM atom_flakes UNION ALL SELECT * FROM test_flakes`);
  const countBuilds = db.prepare<[string, number], { n: number }>(
    'SELECT count(*) AS n FROM (SELECT id FROM build_facts WHERE job_name = ? COLLATE NOCASE ORDER BY id DESC LIMIT ?)',
  );

  route(router, '/flaky', {
    get: [(req, res) => {
      for (const key of Object.keys(req.query)) {
        if (!(FLAKY_KEYS as readonly string[]).includes(key)) throw badRequest(`Unknown query parameter "${key}". Known parameters: ${FLAKY_KEYS.join(', ')}.`);
      }
      const jobName = req.query['job_name'];
      if (typeof jobName !== 'string' || jobName.trim() === '') throw badRequest('Query parameter job_name is required, once: the job whose builds to rank.');
      if (jobName.length > MAX_JOB_NAME_CHARS) throw badRequest(`Query parameter job_name is longer than ${MAX_JOB_NAME_CHARS} characters.`);
      const builds = queryInt(req.query, 'builds') ?? DEFAULT_FLAKY_BUILDS;
      if (builds < 1 || builds > MAX_FLAKY_BUILDS) throw badRequest(`Query parameter builds must be between 1 and ${MAX_FLAKY_BUILDS}, not ${builds}.`);
      const rows = rank.all(jobName, builds, MAX_RANKED, MAX_RANKED);
      res.json({
        job_name: jobName,
        builds: countBuilds.get(jobName, builds)!.n,
        atoms: rows.filter((row) => row.kind === 'atom')
          .map((row) => ({ command_string: atomCommandString(row.a, row.b), flaky_count: row.flaky_count, last_build_id: row.last_build_id })),
        tests: rows.filter((row) => row.kind === 'test')
          .map((row) => ({ classname: row.a, name: row.b, flaky_count: row.flaky_count, last_build_id: row.last_build_id })),
        child_routes: { [tree.build]: `${tree.prefix}/${tree.build}/[build_id]` },
      });
    }],
  });
}
