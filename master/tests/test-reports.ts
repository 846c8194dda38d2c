import { readdir } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { Logger } from '../../shared/log.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Db } from '../store/database.ts';
import { DEFAULT_JUNIT_LIMITS, NotJunitError, parseJunitFile, type JunitLimits } from './junit-parser.ts';
import { MAX_TEST_ROWS_PER_BUILD, testStoreOf, type AtomAttempt } from './test-store.ts';

/**
 * Reading the JUnit XML reports an atom left (SPEC §15): every `*.xml` file in its stored artifact folder,
 * which holds what the command wrote to `$ARTIFACT_DIR` and, under `clusterrunner_junit/`, the files the
 * worker collected with the job's `junit:` globs (worker/junit-files.ts).
 *
 * One queue per master (per database): one report is read at a time, in pieces with the event loop
 * turning between them, so reading never holds up results, heartbeats or requests. A report that is too
 * big, malformed or hostile is recorded as that file's error and logged; it never fails the build.
 * The finisher waits for a build's reports (settleBuildTests) before the build becomes terminal, so a
 * client that sees it finished sees all its tests.
 */

/** An atom's folder is searched this deep and for at most this many XML files. */
const MAX_SEARCH_DEPTH = 8;
const MAX_REPORTS_PER_ATOM = 500;
/** Entries looked at per atom folder, XML or not: a folder of a million files is not walked to the end. */
const MAX_WALKED_ENTRIES = 20_000;

export interface AtomReports extends AtomAttempt {
  /** The atom's stored artifact folder on the master. */
  readonly dir: string;
  /** The job's timing history key: what its test files took feeds later estimates. */
  readonly jobKey: string;
}

class ReportQueue {
  #tail: Promise<void> = Promise.resolve();
  readonly #pending = new Map<number, Set<Promise<void>>>();
  readonly #db: Db;
  readonly #log: Logger;
  readonly #limits: JunitLimits;

  constructor(db: Db, log: Logger, limits: JunitLimits) {
    this.#db = db;
    this.#log = log;
    this.#limits = limits;
  }

  add(reports: AtomReports): void {
    const done = this.#tail.then(() => this.#read(reports)).catch((error: unknown) => {
      // The database closing under a master that stops is the usual cause: nothing to report to.
      this.#log.warn({ buildId: reports.buildId, err: error }, 'could not record test reports');
    });
    this.#tail = done;
    const set = this.#pending.get(reports.buildId) ?? new Set();
    this.#pending.set(reports.buildId, set);
    set.add(done);
    void done.finally(() => {
      set.delete(done);
      if (set.size === 0 && this.#pending.get(reports.buildId) === set) this.#pending.delete(reports.buildId);
    });
  }

  async settle(buildId: number): Promise<void> {
    const set = this.#pending.get(buildId);
    if (set !== undefined) await Promise.allSettled([...set]);
  }

  async #read(reports: AtomReports): Promise<void> {
    const store = testStoreOf(this.#db);
    store.startAttempt(reports);
    const log = this.#log.child({ buildId: reports.buildId, subjobId: reports.subjobId, atomId: reports.atomId });
    for (const path of await findXmlFiles(reports.dir)) {
      const name = relative(reports.dir, path).split(sep).join('/');
      try {
        const held = store.rowCount(reports.buildId);
        if (held >= MAX_TEST_ROWS_PER_BUILD) throw new Error(`the build already holds ${held} test results, the most one build keeps`);
        const tests = await parseJunitFile(path, {
          ...this.#limits, maxTests: Math.min(this.#limits.maxTests, MAX_TEST_ROWS_PER_BUILD - held),
        });
        store.addReport(reports, name, tests);
        store.recordFileTimes(reports.jobKey, tests);
      } catch (error) {
        if (error instanceof NotJunitError) continue;
        const why = errorMessage(error);
        log.warn({ file: name, reason: why }, 'test report not read');
        store.reportError(reports, name, why);
      }
    }
  }
}

const queues = new WeakMap<Db, ReportQueue>();

function queueOf(db: Db, log: Logger, limits: JunitLimits = DEFAULT_JUNIT_LIMITS): ReportQueue {
  let queue = queues.get(db);
  if (queue === undefined) {
    queue = new ReportQueue(db, log, limits);
    queues.set(db, queue);
  }
  return queue;
}

/** An attempt's result was stored: its reports are read in the background (the result recorder's hook). */
export function collectAtomTests(deps: { readonly db: Db; readonly log: Logger }, reports: AtomReports): void {
  queueOf(deps.db, deps.log).add(reports);
}

/** Resolves once every report of the build queued so far is read (the finisher's hook). */
export async function settleBuildTests(db: Db, buildId: number): Promise<void> {
  await queues.get(db)?.settle(buildId);
}

/** The XML files under an atom's folder, sorted, without following links; bounded (see the constants). */
export async function findXmlFiles(root: string): Promise<string[]> {
  const found: string[] = [];
  let walked = 0;
  const walk = async (dir: string, depth: number): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (++walked > MAX_WALKED_ENTRIES || found.length >= MAX_REPORTS_PER_ATOM) return;
      const path = join(dir, entry.name);
      if (entry.isDirectory() && depth < MAX_SEARCH_DEPTH) await walk(path, depth + 1);
      else if (entry.isFile() && entry.name.toLowerCase().endsWith('.xml')) found.push(path);
    }
  };
  await walk(root, 0);
  return found;
}
