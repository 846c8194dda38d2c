import type { RequestHandler, Router } from 'express';
import { z } from 'zod';
import { badRequest, notFound } from '../../shared/errors.ts';
import type { Store } from '../store/index.ts';
import type { BuildManager } from '../builds/build-manager.ts';
import type { BuildRecord } from '../store/build-store.ts';
import { readConsolePage } from '../builds/console-files.ts';
import { attemptConsolePath } from '../builds/attempts.ts';
import type { ResultsLayout } from '../builds/results-layout.ts';
import type { AttemptRecord } from '../store/attempt-store.ts';
import { pathId, queryInt } from './request-values.ts';
import { parseBody, route, type ApiTree } from './api-tree.ts';

/** A retry names at most this many atoms; the body limit (max_body_bytes) bounds it first in practice. */
const MAX_RETRY_ATOMS = 100_000;

const RETRY_KEYS = ['atoms'] as const;
const retryRequestSchema = z.strictObject({
  atoms: z.array(z.string().regex(/^\d{1,9}\/\d{1,9}$/, 'give each atom as "<subjob id>/<atom id>", e.g. "0/3"'))
    .min(1, 'list at least one atom, or send {} to run every failed atom again')
    .max(MAX_RETRY_ATOMS)
    // "00/3" and "0/3" are the same atom.
    .transform((refs) => refs.map((ref) => ref.split('/').map(Number).join('/')))
    .optional(),
});

export interface RetryRoutesDeps {
  readonly store: Store;
  readonly manager: BuildManager;
  readonly layout: ResultsLayout;
  readonly requireDigest: RequestHandler;
}

/** The children these routes add to a build's and an atom's `child_routes`. */
export function retryChildRoutes(tree: ApiTree): { retry: string } {
  return { retry: `${tree.prefix}/${tree.build}/[build_id]/retry` };
}

export function attemptChildRoutes(tree: ApiTree): { attempts: string } {
  return { attempts: `${tree.prefix}/${tree.build}/[build_id]/${tree.subjob}/[subjob_id]/${tree.atom}/[atom_id]/attempts` };
}

function attemptShape(attempt: AttemptRecord) {
  return {
    attempt: attempt.attempt,
    worker: attempt.worker,
    exit_code: attempt.exitCode,
    state: attempt.state,
    stop_reason: attempt.stopReason,
    started: attempt.started,
    finished: attempt.finished,
  };
}

/**
 * Attempts and retry (SPEC §10): `POST …/build/:id/retry`, an atom's attempts, and the console of one attempt
 * (`…/console?attempt=N`). Registered before the build routes: a console request without `attempt` goes on
 * to them unchanged.
 */
export function addRetryRoutes(router: Router, deps: RetryRoutesDeps, tree: ApiTree): void {
  const { store, manager, layout } = deps;
  const atomPath = `/${tree.build}/:buildId/${tree.subjob}/:subjobId/${tree.atom}/:atomId`;

  const loadAtom = (params: Record<string, string | string[] | undefined>) => {
    store.batcher.flush();
    const buildId = pathId(params['buildId'], 'build');
    const build: BuildRecord | null = store.builds.get(buildId);
    if (!build) throw notFound(`Invalid build id: ${buildId}.`);
    const subjobId = pathId(params['subjobId'], 'subjob');
    if (!store.atoms.getSubjob(buildId, subjobId)) throw notFound(`Invalid subjob id: ${subjobId} (build ${buildId} has ${build.numSubjobs} subjobs).`);
    const atomId = pathId(params['atomId'], 'atom');
    const atom = store.atoms.getAtom(buildId, subjobId, atomId);
    if (!atom) throw notFound(`Invalid atom id: ${atomId} (in subjob ${subjobId} of build ${buildId}).`);
    return atom;
  };

  route(router, `/${tree.build}/:buildId/retry`, {
    post: [deps.requireDigest, async (req, res) => {
      const body = parseBody(req, RETRY_KEYS, retryRequestSchema);
      const buildId = pathId(req.params['buildId'], 'build');
      const retried = await manager.retry(buildId, body.atoms ?? null);
      res.status(202).json({ build_id: buildId, num_atoms_retried: retried, STATUS: 'SUCCESS' });
    }],
  });

  route(router, `${atomPath}/attempts`, {
    get: [(req, res) => {
      const atom = loadAtom(req.params);
      const attempts = store.attempts.list(atom.buildId, atom.subjobId, atom.id).map(attemptShape);
      // An attempt's console: this console route with ?attempt=N.
      res.json({ attempts, child_routes: { console: `${tree.prefix}/${tree.build}/[build_id]/${tree.subjob}/[subjob_id]/${tree.atom}/[atom_id]/console` } });
    }],
  });

  // Not route(): the build routes answer this path's other methods, and its GETs without `attempt`.
  router.get(`${atomPath}/console`, (req, res, next) => {
    if (req.query['attempt'] === undefined) {
      next();
      return;
    }
    const atom = loadAtom(req.params);
    const attempt = queryInt(req.query, 'attempt')!;
    if (attempt < 1) throw badRequest('attempt must be a positive integer (1 for the first run).');
    if (attempt > atom.attempts) {
      throw notFound(`Atom ${atom.subjobId}/${atom.id} of build ${atom.buildId} has ${atom.attempts} attempt${atom.attempts === 1 ? '' : 's'}, not ${attempt}.`);
    }
    const maxLines = queryInt(req.query, 'max_lines') ?? 50;
    const offsetLine = queryInt(req.query, 'offset_line') ?? null;
    const path = attemptConsolePath(layout, atom.buildId, atom.subjobId, atom.id, attempt, atom.attempts);
    readConsolePage(path, maxLines, offsetLine).then((page) => res.json({ ...page, attempt }), next);
  });
}
