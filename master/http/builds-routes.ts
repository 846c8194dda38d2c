import type { RequestHandler, Response, Router } from 'express';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { notFound } from '../../shared/errors.ts';
import type { Store } from '../store/index.ts';
import type { BuildManager } from '../builds/build-manager.ts';
import type { BuildRecord } from '../store/build-store.ts';
import type { AtomRecord, SubjobRecord } from '../store/atom-store.ts';
import { readConsolePage } from '../builds/console-files.ts';
import { isTerminalStatus } from '../../shared/api/statuses.ts';
import { BUILD_REQUEST_KEYS, CANCEL_BUILD_KEYS, cancelBuildRequestSchema } from '../../shared/api/requests.ts';
import { CONSOLE_FILE, type ResultsLayout } from '../builds/results-layout.ts';
import { join } from 'node:path';
import { atomShape, buildShape, subjobShape } from './shapes.ts';
import { findingChildRoutes } from './search-routes.ts';
import { createFailedAtomsView } from './failed-atoms.ts';
import { flakyAtomsOf } from './flaky-routes.ts';
import { attemptChildRoutes, retryChildRoutes } from './retry-routes.ts';
import { testViewFields } from './tests-routes.ts';
import { createBuildQuery } from '../store/build-query.ts';
import { pagination, loadBuildRecord, pathId, queryInt } from './request-values.ts';
import { objectBody, parseBody, route, type ApiTree } from './api-tree.ts';

export interface BuildRoutesDeps {
  readonly store: Store;
  readonly manager: BuildManager;
  readonly layout: ResultsLayout;
  readonly requireDigest: RequestHandler;
  /** Our signed form only (timestamp + nonce): for what only workers may read. */
  readonly requireSignature: RequestHandler;
}

/** Streams a file as a download; never holds it in memory. */
async function sendFile(res: Response, path: string, filename: string): Promise<void> {
  const info = await stat(path).catch(() => null);
  if (!info) throw notFound(`${filename} is missing on the master.`);
  res.status(200).set({
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(info.size),
    'Content-Disposition': `attachment; filename="${filename}"`,
  });
  await new Promise<void>((resolve, reject) => {
    const stream = createReadStream(path);
    stream.on('error', reject);
    res.on('close', () => {
      stream.destroy();
      resolve();
    });
    stream.pipe(res);
  });
}

function page<T>(items: readonly T[], tree: ApiTree, query: Record<string, unknown>): readonly T[] {
  if (!tree.isPaginated) return items;
  const { offset, limit } = pagination(query);
  return items.slice(offset, offset + limit);
}

export function addBuildRoutes(router: Router, deps: BuildRoutesDeps, tree: ApiTree): void {
  const { store, manager, layout } = deps;
  const b = `/${tree.build}`;
  const childRoutes = {
    [tree.subjob]: `${tree.prefix}${b}/[build_id]/${tree.subjob}`,
    'artifacts.tar.gz': `${tree.prefix}${b}/[build_id]/artifacts.tar.gz`,
    'artifacts.zip': `${tree.prefix}${b}/[build_id]/artifacts.zip`,
    result: `${tree.prefix}${b}/[build_id]/result`,
    ...findingChildRoutes(tree),
    ...retryChildRoutes(tree),
  };

  const loadBuild = (raw: string | string[] | undefined): BuildRecord => loadBuildRecord(store, raw);
  // failed_atoms is shown only for terminal builds: a list of running builds costs no query per build. A list
  // holds the first 100 (MAX_LISTED_FAILED_ATOMS), a build's own view the first 1,000, with num_failed_atoms
  // beside them, so one build of 50,000 failed atoms does not make every GET megabytes long (issue 10 item 3).
  const query = createBuildQuery(store.db);
  const buildFailedAtoms = createFailedAtomsView(store);
  const shape = (build: BuildRecord, isList: boolean) => {
    const failed = !isTerminalStatus(build.status) ? null : isList ? query.failedAtoms(build.id) : buildFailedAtoms(build.id);
    return {
      ...(failed
        ? buildShape(build, failed.atoms, `${tree.prefix}${b}`)
        : buildShape(build, null, `${tree.prefix}${b}`, manager.waitingForWorkers(build.id))),
      num_failed_atoms: failed ? failed.total : null,
      flaky_atoms: failed ? flakyAtomsOf(store, build.id) : null, // SPEC §15 (flaky-routes.ts)
      // SPEC §11: when and why it started, and from which repository, branch and commit.
      ...query.identity(build.id),
      // SPEC §15: the tests summary, and while it runs the ETA.
      ...testViewFields(store, build),
    };
  };
  const loadSubjob = (build: BuildRecord, raw: string | string[] | undefined) => {
    const id = pathId(raw, 'subjob');
    const subjob = store.atoms.getSubjob(build.id, id);
    if (!subjob) throw notFound(`Invalid subjob id: ${id} (build ${build.id} has ${build.numSubjobs} subjobs).`);
    return subjob;
  };
  const loadAtom = (build: BuildRecord, subjobId: number, raw: string | string[] | undefined) => {
    const id = pathId(raw, 'atom');
    const atom = store.atoms.getAtom(build.id, subjobId, id);
    if (!atom) throw notFound(`Invalid atom id: ${id} (in subjob ${subjobId} of build ${build.id}).`);
    return atom;
  };

  route(router, b, {
    get: [(req, res) => {
      store.batcher.flush();
      const { offset, limit } = tree.isPaginated ? pagination(req.query) : { offset: 0, limit: Number.MAX_SAFE_INTEGER };
      const builds = store.builds.list(offset, limit);
      res.json({ builds: builds.map((build) => shape(build, true)), child_routes: { build: `${tree.prefix}${b}/[build_id]` } });
    }],
    post: [deps.requireDigest, (req, res) => {
      // The manager validates the body against the schema of shared/api/requests.ts (build-request.ts).
      const id = manager.createBuild(objectBody(req, BUILD_REQUEST_KEYS));
      res.status(202).json({ build_id: id, STATUS: 'SUCCESS' });
    }],
  });

  route(router, `${b}/:buildId`, {
    get: [(req, res) => {
      const build = loadBuild(req.params['buildId']);
      res.json({ build: shape(build, false), child_routes: childRoutes });
    }],
    put: [deps.requireDigest, async (req, res) => {
      parseBody(req, CANCEL_BUILD_KEYS, cancelBuildRequestSchema);
      const build = loadBuild(req.params['buildId']);
      await manager.cancel(build.id);
      res.json({ build_id: build.id, STATUS: 'SUCCESS' });
    }],
  });

  route(router, `${b}/:buildId/result`, {
    get: [(req, res) => {
      const build = loadBuild(req.params['buildId']);
      res.redirect(302, `${tree.prefix}${b}/${build.id}/artifacts.tar.gz`);
    }],
  });

  for (const kind of ['tar.gz', 'zip'] as const) {
    route(router, `${b}/:buildId/artifacts.${kind}`, {
      get: [async (req, res) => {
        const build = loadBuild(req.params['buildId']);
        if (!build.artifactsReady) {
          res.status(202).json({ STATUS: 'NOT_READY', message: `The artifacts of build ${build.id} are not ready yet (status ${build.status}).` });
          return;
        }
        const path = kind === 'zip' ? layout.zip(build.id) : layout.tarGz(build.id);
        await sendFile(res, path, `build_${build.id}_artifacts.${kind}`);
      }],
    });
  }

  // The project snapshot is the build's source code: workers only, whatever authenticate_reads says.
  route(router, `${b}/:buildId/project.tar.gz`, {
    get: [deps.requireSignature, async (req, res) => {
      const build = loadBuild(req.params['buildId']);
      const path = await manager.projectSnapshot(build.id);
      if (path === null) throw notFound(`Build ${build.id} has no project to serve (it is finished or not prepared yet).`);
      await sendFile(res, path, `build_${build.id}_project.tar.gz`);
    }],
  });

  route(router, `${b}/:buildId/${tree.subjob}`, {
    get: [(req, res) => {
      const build = loadBuild(req.params['buildId']);
      const command = build.job?.command ?? '';
      // A page is read as a page, and its atoms in one read: a query per subjob took 0.8 s for a build of 100,000.
      let chosen: SubjobRecord[];
      if (tree.isPaginated) {
        const { offset, limit } = pagination(req.query);
        chosen = store.atoms.listSubjobsPage(build.id, offset, limit);
      } else {
        chosen = store.atoms.listSubjobs(build.id);
      }
      const atomsOf = new Map<number, AtomRecord[]>();
      if (chosen.length > 0) {
        for (const atom of store.atoms.listSubjobRangeAtoms(build.id, chosen[0]!.id, chosen[chosen.length - 1]!.id)) {
          const list = atomsOf.get(atom.subjobId);
          if (list === undefined) atomsOf.set(atom.subjobId, [atom]);
          else list.push(atom);
        }
      }
      const subjobs = chosen.map((subjob) => subjobShape(subjob, atomsOf.get(subjob.id) ?? [], command));
      res.json({ subjobs, child_routes: { subjob: `${tree.prefix}${b}/[build_id]/${tree.subjob}/[subjob_id]` } });
    }],
  });

  route(router, `${b}/:buildId/${tree.subjob}/:subjobId`, {
    get: [(req, res) => {
      const build = loadBuild(req.params['buildId']);
      const subjob = loadSubjob(build, req.params['subjobId']);
      res.json({
        subjob: subjobShape(subjob, store.atoms.listSubjobAtoms(build.id, subjob.id), build.job?.command ?? ''),
        child_routes: { [tree.atom]: `${tree.prefix}${b}/[build_id]/${tree.subjob}/[subjob_id]/${tree.atom}` },
      });
    }],
  });

  route(router, `${b}/:buildId/${tree.subjob}/:subjobId/${tree.atom}`, {
    get: [(req, res) => {
      const build = loadBuild(req.params['buildId']);
      const subjob = loadSubjob(build, req.params['subjobId']);
      const atoms = page(store.atoms.listSubjobAtoms(build.id, subjob.id), tree, req.query).map(atomShape);
      res.json({ atoms, child_routes: { [tree.atom]: `${tree.prefix}${b}/[build_id]/${tree.subjob}/[subjob_id]/${tree.atom}/[atom_id]` } });
    }],
  });

  route(router, `${b}/:buildId/${tree.subjob}/:subjobId/${tree.atom}/:atomId`, {
    get: [(req, res) => {
      const build = loadBuild(req.params['buildId']);
      const subjob = loadSubjob(build, req.params['subjobId']);
      const atom = loadAtom(build, subjob.id, req.params['atomId']);
      res.json({
        atom: atomShape(atom),
        child_routes: {
          console: `${tree.prefix}${b}/[build_id]/${tree.subjob}/[subjob_id]/${tree.atom}/[atom_id]/console`,
          ...attemptChildRoutes(tree),
        },
      });
    }],
  });

  route(router, `${b}/:buildId/${tree.subjob}/:subjobId/${tree.atom}/:atomId/console`, {
    get: [async (req, res) => {
      const build = loadBuild(req.params['buildId']);
      const subjob = loadSubjob(build, req.params['subjobId']);
      const atom = loadAtom(build, subjob.id, req.params['atomId']);
      const maxLines = queryInt(req.query, 'max_lines') ?? 50;
      const offsetLine = queryInt(req.query, 'offset_line') ?? null;
      const path = join(layout.atomDir(build.id, subjob.id, atom.id), CONSOLE_FILE);
      res.json(await readConsolePage(path, maxLines, offsetLine));
    }],
  });
}
