import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Gauge } from 'prom-client';
import type { Logger } from '../../shared/log.ts';
import { errorMessage } from '../../shared/errors.ts';
import { folderBytes } from '../../shared/folder-size.ts';
import type { Db } from '../store/database.ts';
import { compactDatabase, createPruneQueries, type PruneQueries } from './prune-queries.ts';

export interface PrunerOptions {
  readonly db: Db;
  /** `<base_directory>/results`: one folder per build id. */
  readonly resultsRoot: string;
  /** `<base_directory>/projects`: a master's checkout of a git build, normally gone when the build ends. */
  readonly checkoutsRoot: string;
  /** Finished builds older than this go (conf keep_builds_days). */
  readonly keepBuildsMs: number;
  /** Results kept in all; past it the oldest finished builds go (conf max_results_bytes). */
  readonly maxResultsBytes: number;
  readonly log: Logger;
  /** Milliseconds since the epoch; tests pass a clock they control. Default Date.now. */
  readonly now?: () => number;
  /** Between passes; default 10 minutes, kept within 1 s .. 1 h. */
  readonly intervalMs?: number;
  /** Builds pruned per pass at most; the next pass goes on. Default 200. */
  readonly maxBuildsPerPass?: number;
  /** Database pages (4 KiB) given back per pass at most; default 1024 (4 MiB, tens of milliseconds). */
  readonly maxVacuumPages?: number;
  /** Updated after every pass. */
  readonly gauges?: {
    readonly resultsBytes: Pick<Gauge, 'set'>;
    readonly oldestBuildTimestampSeconds: Pick<Gauge, 'set'>;
  };
}

export interface PruneReport {
  /** Builds pruned by age, then by the size bound, in the order pruned. */
  readonly prunedByAge: readonly number[];
  readonly prunedBySize: readonly number[];
  /** Results on disk after the pass. */
  readonly resultsBytes: number;
  /** The oldest build kept, or null when none is left. */
  readonly oldestBuildId: number | null;
  readonly compaction: 'incremental' | 'vacuum' | 'skipped';
}

const DEFAULT_INTERVAL_MS = 10 * 60_000;
const MIN_INTERVAL_MS = 1_000;
const MAX_INTERVAL_MS = 60 * 60_000;
const EVENTS_PER_DELETE = 5_000;
/** The size bound spares builds finished less than this long ago. */
const SIZE_PRUNE_GRACE_MS = 10 * 60_000;
/** A full VACUUM while serving is allowed up to this size (about 2 s of stall); larger files wait for a restart. */
const MAX_VACUUM_BYTES_WHILE_SERVING = 64 * 1024 * 1024;

/**
 * Keeps a master that runs for months within its disk: finished builds older than keep_builds_days, and the
 * oldest finished builds past max_results_bytes, lose their result files (console output, artifacts, archives,
 * snapshot) and their database rows. A build that is not finished is never touched. Runs at start, then every
 * interval; each pass prunes a bounded number of builds and yields to the event loop between them, so that
 * requests and workers are served meanwhile.
 */
export class Pruner {
  readonly #options: PrunerOptions;
  readonly #queries: PruneQueries;
  readonly #now: () => number;
  readonly #intervalMs: number;
  readonly #maxBuildsPerPass: number;
  /** Finished builds never change on disk again: measured once. */
  readonly #finishedBytes = new Map<number, number>();
  #timer: NodeJS.Timeout | null = null;
  #pass: Promise<PruneReport> | null = null;
  #isClosed = false;
  readonly #abort = new AbortController();

  constructor(options: PrunerOptions) {
    if (!(options.keepBuildsMs > 0)) throw new Error(`keepBuildsMs must be > 0, not ${options.keepBuildsMs}`);
    if (!(options.maxResultsBytes > 0)) throw new Error(`maxResultsBytes must be > 0, not ${options.maxResultsBytes}`);
    this.#options = options;
    this.#queries = createPruneQueries(options.db);
    this.#now = options.now ?? Date.now;
    this.#intervalMs = Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, options.intervalMs ?? DEFAULT_INTERVAL_MS));
    this.#maxBuildsPerPass = Math.max(1, options.maxBuildsPerPass ?? 200);
    // Constructed as the master starts, before it listens: the one moment a full VACUUM stalls no worker.
    if (options.db.name !== ':memory:') {
      const outcome = compactDatabase(options.db, { maxPages: options.maxVacuumPages ?? 1024, isQuiet: !this.#queries.hasUnfinishedBuilds(), maxVacuumBytes: Infinity });
      if (outcome === 'vacuum') options.log.info('database switched to incremental vacuum');
    }
  }

  /** A first pass now, then one every interval. */
  start(): void {
    if (this.#timer !== null || this.#isClosed) return;
    const tick = () => {
      void this.runPass().catch((error: unknown) => {
        if (!this.#isClosed) this.#options.log.error({ err: errorMessage(error) }, 'pruning failed; trying again at the next pass');
      }).finally(() => {
        if (!this.#isClosed) this.#timer = setTimeout(tick, this.#intervalMs).unref();
      });
    };
    this.#timer = setTimeout(tick, 0).unref();
  }

  /** One pass; a call while one runs gets that pass. */
  runPass(): Promise<PruneReport> {
    this.#pass ??= this.#runPass().finally(() => {
      this.#pass = null;
    });
    return this.#pass;
  }

  /** Stops the timer and waits for a running pass (it stops at the next build). Idempotent. */
  async close(): Promise<void> {
    this.#isClosed = true;
    this.#abort.abort();
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#pass?.catch(() => undefined);
  }

  async #runPass(): Promise<PruneReport> {
    const started = performance.now();
    const nowSeconds = this.#now() / 1000;
    const cutoffSeconds = nowSeconds - this.#options.keepBuildsMs / 1000;
    let budget = this.#maxBuildsPerPass;

    const prunedByAge: number[] = [];
    for (const build of this.#queries.finishedBefore(cutoffSeconds, budget)) {
      if (this.#isClosed) break;
      if (await this.#pruneBuild(build.id)) prunedByAge.push(build.id);
      budget--;
      await yieldToEventLoop();
    }

    const sizes = await this.#measureResults();
    await this.#removeOrphans(sizes, cutoffSeconds * 1000);
    let resultsBytes = [...sizes.values()].reduce((sum, bytes) => sum + bytes, 0);
    const prunedBySize: number[] = [];
    if (resultsBytes > this.#options.maxResultsBytes) {
      for (const { id, finished } of this.#queries.terminalBuilds()) {
        if (resultsBytes <= this.#options.maxResultsBytes || budget <= 0 || this.#isClosed) break;
        // Whoever started a build gets the time to download its results, however full the disk.
        if (finished > nowSeconds - SIZE_PRUNE_GRACE_MS / 1000) continue;
        budget--;
        if (!(await this.#pruneBuild(id))) continue;
        prunedBySize.push(id);
        resultsBytes -= sizes.get(id) ?? 0;
        await yieldToEventLoop();
      }
    }

    const deletedEvents = this.#queries.deleteOldEvents(cutoffSeconds, EVENTS_PER_DELETE);
    const pruned = prunedByAge.length + prunedBySize.length;
    const compaction = pruned > 0 || deletedEvents > 0
      ? compactDatabase(this.#options.db, {
        maxPages: this.#options.maxVacuumPages ?? 1024, isQuiet: !this.#queries.hasUnfinishedBuilds(), maxVacuumBytes: MAX_VACUUM_BYTES_WHILE_SERVING,
      })
      : 'skipped';

    const oldest = this.#queries.oldest();
    this.#options.gauges?.resultsBytes.set(resultsBytes);
    this.#options.gauges?.oldestBuildTimestampSeconds.set(oldest?.queued ?? 0);
    const report: PruneReport = { prunedByAge, prunedBySize, resultsBytes, oldestBuildId: oldest?.id ?? null, compaction };
    const fields = { ...report, prunedByAge: prunedByAge.length, prunedBySize: prunedBySize.length, deletedEvents, ms: Math.round(performance.now() - started) };
    if (pruned > 0 || deletedEvents > 0) this.#options.log.info(fields, 'pruned old builds');
    else this.#options.log.debug(fields, 'nothing to prune');
    return report;
  }

  /**
   * Files first, then rows: a crash in between leaves a row whose files are gone, which the next pass prunes
   * again; the other order would leave folders no row points to, counted against the bound for ever.
   */
  async #pruneBuild(buildId: number): Promise<boolean> {
    if (!this.#queries.isTerminal(buildId)) return false;
    try {
      await rm(join(this.#options.resultsRoot, String(buildId)), { recursive: true, force: true, maxRetries: 2 });
      await rm(join(this.#options.checkoutsRoot, String(buildId)), { recursive: true, force: true, maxRetries: 2 });
    } catch (error) {
      this.#options.log.warn({ buildId, err: errorMessage(error) }, 'cannot remove the files of an old build; keeping it for now');
      return false;
    }
    this.#finishedBytes.delete(buildId);
    return this.#queries.deleteRows(buildId);
  }

  /**
   * A results folder with no build row (its rows went and the master stopped before its files did, or the
   * database was replaced) is removed once it is as old as a build would be, so nothing is kept for ever.
   */
  async #removeOrphans(sizes: Map<number, number>, beforeMs: number): Promise<void> {
    const known = this.#queries.allIds();
    for (const id of [...sizes.keys()]) {
      if (known.has(id) || this.#isClosed) continue;
      const folder = join(this.#options.resultsRoot, String(id));
      const modifiedMs = (await stat(folder).catch(() => null))?.mtimeMs ?? Number.POSITIVE_INFINITY;
      if (modifiedMs >= beforeMs) continue;
      try {
        await rm(folder, { recursive: true, force: true, maxRetries: 2 });
        sizes.delete(id);
        this.#options.log.info({ folder }, 'removed a results folder of no build');
      } catch (error) {
        this.#options.log.warn({ folder, err: errorMessage(error) }, 'cannot remove a results folder of no build');
      }
    }
  }

  /** Bytes per build folder under results/ (folders of no build too: they take disk all the same). */
  async #measureResults(): Promise<Map<number, number>> {
    const sizes = new Map<number, number>();
    const names = await readdir(this.#options.resultsRoot).catch(() => [] as string[]);
    const finished = new Set(this.#queries.terminalBuilds().map((build) => build.id));
    for (const name of names) {
      if (!/^\d+$/.test(name)) continue;
      const id = Number(name);
      const known = this.#finishedBytes.get(id);
      if (known !== undefined && finished.has(id)) {
        sizes.set(id, known);
        continue;
      }
      const bytes = await folderBytes(join(this.#options.resultsRoot, name), this.#abort.signal).catch(() => 0);
      sizes.set(id, bytes);
      if (finished.has(id)) this.#finishedBytes.set(id, bytes);
    }
    for (const id of this.#finishedBytes.keys()) if (!sizes.has(id)) this.#finishedBytes.delete(id);
    return sizes;
  }
}
