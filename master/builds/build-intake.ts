import type { Logger } from '../../shared/log.ts';
import { notFound } from '../../shared/errors.ts';
import { validateGitSource } from '../../shared/git.ts';
import type { Store } from '../store/index.ts';
import { isTerminal } from '../model/build-status.ts';
import { BuildRun } from './build-run.ts';
import { parseBuildRequest, redactRequestParams } from './build-request.ts';
import type { BuildSettings } from './build-settings.ts';
import type { FinishStatus } from './finisher.ts';

/** The API's way in: a new build is validated, recorded and queued for preparation; a cancel ends one. */
export class BuildIntake {
  readonly #store: Store;
  readonly #settings: BuildSettings;
  readonly #log: Logger;
  readonly #runs: Map<number, BuildRun>;
  readonly #prepare: (run: BuildRun) => void;
  readonly #finish: (run: BuildRun, status: FinishStatus, errorText: string | null) => Promise<void>;

  constructor(deps: {
    store: Store; settings: BuildSettings; log: Logger; runs: Map<number, BuildRun>; prepare: (run: BuildRun) => void;
    finish: (run: BuildRun, status: FinishStatus, errorText: string | null) => Promise<void>;
  }) {
    this.#store = deps.store;
    this.#settings = deps.settings;
    this.#log = deps.log;
    this.#runs = deps.runs;
    this.#prepare = deps.prepare;
    this.#finish = deps.finish;
  }

  createBuild(body: unknown): number {
    const request = parseBuildRequest(body);
    if (request.type === 'git') {
      // Hostile URLs and refs are refused here, before any process could be started for them.
      validateGitSource(
        { url: request.url!, branch: request.branch, hash: request.hash, remote: request.remote },
        { allowLocalRepositories: this.#settings.allowLocalRepositories },
      );
    }
    const id = this.#store.builds.insert({
      requestParams: redactRequestParams(body as Record<string, unknown>),
      request,
      projectType: request.type,
      jobName: request.jobName,
      priority: request.priority,
    });
    this.#store.events.append('BUILD_REQUEST_QUEUED', { build_id: id, type: request.type });
    const run = new BuildRun(id, request.priority, request);
    this.#runs.set(id, run);
    this.#prepare(run);
    this.#log.info({ buildId: id, type: request.type }, 'build queued');
    return id;
  }

  /** PUT {"status": "canceled"}: a no-op on a terminal build. */
  async cancel(buildId: number): Promise<void> {
    const record = this.#store.builds.get(buildId);
    if (!record) throw notFound(`Invalid build id: ${buildId}.`);
    const run = this.#runs.get(buildId);
    if (isTerminal(record.status) || !run || run.phase === 'finishing') return;
    this.#log.info({ buildId }, 'canceling build');
    await this.#finish(run, 'CANCELED', null);
  }
}
