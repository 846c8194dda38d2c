import { stat } from 'node:fs/promises';
import type { Logger } from '../../shared/log.ts';
import { badRequest, conflict, notFound } from '../../shared/errors.ts';
import type { Store } from '../store/index.ts';
import type { AtomRecord } from '../store/atom-store.ts';
import type { AtomRef } from '../store/retry-store.ts';
import { isTerminal, transitionBuildStatus } from '../model/build-status.ts';
import { BuildRun } from './build-run.ts';
import type { BuildRequest } from './build-request.ts';

/** BUILD_RETRIED names at most this many atoms; num_atoms_retried always counts them all. */
const MAX_ATOMS_IN_EVENT = 100;

/**
 * Retry (SPEC §10, Cider-CI's "retry and resume"): the failed atoms of a finished build, or the ones asked
 * for, run again as new attempts of the same build. The build goes back to BUILDING and gets a live run as a
 * restarted master would (recovery.ts): the atoms not retried keep their results, the others queue again.
 * Workers tore the build down when it ended, so the dispatcher sets it up again where it runs; the job,
 * the project (same folder, or same commit) and the plan are the ones the build recorded.
 */
export class BuildRetrier {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #runs: Map<number, BuildRun>;
  readonly #whenFinished: (buildId: number) => Promise<void> | null;
  readonly #makeReady: (run: BuildRun) => void;

  constructor(deps: {
    store: Store; log: Logger; runs: Map<number, BuildRun>;
    /** The end of a build still being finished (archived, cleaned up), or null. */
    whenFinished: (buildId: number) => Promise<void> | null;
    /** The run joins dispatch. */
    makeReady: (run: BuildRun) => void;
  }) {
    this.#store = deps.store;
    this.#log = deps.log;
    this.#runs = deps.runs;
    this.#whenFinished = deps.whenFinished;
    this.#makeReady = deps.makeReady;
  }

  /**
   * Runs again the atoms listed (as `"<subjob id>/<atom id>"`), or every failed one when atoms is null; atoms
   * with no result at all (a canceled build's) always run too, since a build ends only with every result.
   * Returns how many atoms run again. 404: unknown build; 400: an unknown atom; 409: the build is not
   * finished, was never prepared, has nothing to run again, or its project folder is gone.
   */
  async retry(buildId: number, atoms: readonly string[] | null): Promise<number> {
    // A build that has just become terminal is still archiving and cleaning up: let it leave memory first.
    await this.#whenFinished(buildId);
    this.#store.batcher.flush();
    const record = this.#store.builds.get(buildId);
    if (!record) throw notFound(`Invalid build id: ${buildId}.`);
    if (!isTerminal(record.status) || this.#runs.has(buildId)) {
      throw conflict(`Build ${buildId} is ${record.status}: only a finished build can be retried. Wait for it to end, or cancel it.`);
    }
    if (record.job === null || record.projectDir === null) {
      throw conflict(`Build ${buildId} ended ${record.status} before it had atoms, so there is nothing to run again: start a new build.`);
    }
    const project = record.job.project;
    if (project.type === 'directory' && !(await stat(project.path).catch(() => null))?.isDirectory()) {
      throw conflict(`The project directory ${project.path} of build ${buildId} is gone from the master: a retry runs the same project. ` +
        'Start a new build instead.');
    }
    // Nothing above may have changed while stat() ran: the checks and the move are repeated with no await between.
    this.#store.batcher.flush();
    const current = this.#store.builds.get(buildId)!;
    if (!isTerminal(current.status) || this.#runs.has(buildId)) {
      throw conflict(`Build ${buildId} is ${current.status}: only a finished build can be retried.`);
    }
    const all = this.#store.atoms.listBuildAtoms(buildId);
    const chosen = chooseAtoms(buildId, all, atoms);
    if (chosen.size === 0) {
      throw conflict(`Build ${buildId} is ${current.status} with no failed atom: name the atoms to run again ({"atoms": ["0/0"]}).`);
    }
    transitionBuildStatus(buildId, current.status, 'BUILDING');
    const refs: AtomRef[] = all.filter((atom) => chosen.has(key(atom))).map((atom) => ({ subjobId: atom.subjobId, atomId: atom.id }));
    this.#store.retries.reopen(buildId, current.status, refs);
    this.#store.events.append('BUILD_RETRIED', {
      build_id: buildId,
      previous_status: current.status,
      num_atoms_retried: refs.length,
      atoms: refs.slice(0, MAX_ATOMS_IN_EVENT).map((ref) => `${ref.subjobId}/${ref.atomId}`),
    });
    this.#store.batcher.flush();

    const run = new BuildRun(buildId, current.priority, current.request as BuildRequest);
    run.status = 'BUILDING';
    run.job = current.job;
    run.projectDir = current.projectDir;
    const bySubjob = new Map<number, { id: number; atoms: { id: number; variable: string; value: string; isComplete: boolean }[] }>();
    for (const atom of all) {
      let subjob = bySubjob.get(atom.subjobId);
      if (!subjob) bySubjob.set(atom.subjobId, (subjob = { id: atom.subjobId, atoms: [] }));
      subjob.atoms.push({ id: atom.id, variable: atom.variable, value: atom.value, isComplete: !chosen.has(key(atom)) });
    }
    run.load([...bySubjob.values()]);
    for (const atom of all) {
      run.restoreAttempts(atom.subjobId, atom.id, atom.attempts);
      if (chosen.has(key(atom))) run.startRetryRound(atom.subjobId, atom.id);
    }
    this.#runs.set(buildId, run);
    this.#log.info({ buildId, previousStatus: current.status, atoms: refs.length }, 'build retried');
    this.#makeReady(run);
    return refs.length;
  }
}

function key(atom: AtomRecord): string {
  return `${atom.subjobId}/${atom.id}`;
}

/** The atoms to run again, as `sid/aid` keys: the listed ones (or the failed ones), and those with no result. */
function chooseAtoms(buildId: number, all: readonly AtomRecord[], listed: readonly string[] | null): Set<string> {
  const chosen = new Set<string>();
  if (listed !== null) {
    const known = new Set(all.map(key));
    listed.forEach((ref, index) => {
      if (!known.has(ref)) throw badRequest(`"atoms[${index}]": build ${buildId} has no atom ${ref} (give "<subjob id>/<atom id>").`);
      chosen.add(ref);
    });
  }
  for (const atom of all) {
    if (atom.exitCode === null || (listed === null && atom.exitCode !== 0)) chosen.add(key(atom));
  }
  return chosen;
}
