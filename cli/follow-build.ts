/**
 * Follows one build to its end and reports it: what `build` does after creating a build, and what `attach`,
 * `retry` do for an existing one. Atoms are printed as they fail (not only at the end), a summary line gives
 * the counts, the failed atoms are shown with the tail of their output, and the artifacts are downloaded
 * into `build_results/<id>/`. Everything that came from the build is neutralised before it is printed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Conf } from '../shared/conf.ts';
import { errorMessage } from '../shared/errors.ts';
import { downloadResults } from './build-results.ts';
import type { CommandOutput } from './command-output.ts';
import { exitCodeForStatus, EXIT_ERROR } from './exit-codes.ts';
import { isTerminalStatus, isUnreachable, type AtomView, type BuildView, type MasterClient, type SubjobView } from './master-client.ts';
import { createProgressReporter, formatDuration, timestamp, type BuildProgress } from './progress.ts';
import { neutraliseBlock, neutraliseLine } from './terminal-text.ts';
import { printFailedTests } from './failed-tests.ts';

const POLL_MS = 300;
/** Longest pause between two subjob listings of a huge build: the list grows with the atoms. */
const MAX_SUBJOB_POLL_MS = 10_000;
/** How long the build may stay out of reach (a master restart) before we give up waiting. */
const UNREACHABLE_LIMIT_MS = 60_000;
/** Beyond kill_grace: how long a canceled build may take to become terminal. */
const CANCEL_SLACK_MS = 30_000;
const CONSOLE_TAIL_LINES = 20;
/** Failed atoms whose console is fetched and shown; the rest are listed by name only. */
const MAX_FAILED_ATOMS_SHOWN = 20;
const MAX_FAILED_ATOMS_LISTED = 200;
/** Atoms printed as they fail while the build runs; past this, the end report lists them. */
const MAX_LIVE_FAILURES = 200;
/** Running atoms named on the live line. */
const RUNNING_NAMES = 3;

export interface FollowOptions {
  readonly client: MasterClient;
  readonly conf: Conf;
  readonly out: CommandOutput;
  /** First signal: cancel the build and report it as usual. */
  readonly interrupt: AbortSignal;
  readonly isQuiet: boolean;
  /** Where `<id>/` and `latest` go; null: download nothing (--no-results). */
  readonly resultsRoot: string | null;
}

/** Waits for the build's end and reports it; returns the exit code. */
export async function followBuild(options: FollowOptions, buildId: number): Promise<number> {
  const build = await waitForBuild(options, buildId);
  if (build === null) return EXIT_ERROR;
  return reportBuild(options, build);
}

function atomKey(atom: AtomView): string {
  return `${atom.subjob_id}/${atom.id}`;
}

function atomName(atom: AtomView): string {
  return `atom ${atomKey(atom)}`;
}

interface AtomCounts {
  readonly done: number;
  readonly failed: number;
  readonly running: AtomView[];
  readonly failures: AtomView[];
}

function countAtoms(subjobs: readonly SubjobView[]): AtomCounts {
  let done = 0;
  let failed = 0;
  const running: AtomView[] = [];
  const failures: AtomView[] = [];
  for (const subjob of subjobs) {
    for (const atom of subjob.atoms) {
      if (atom.state === 'IN_PROGRESS') running.push(atom);
      if (atom.exit_code === null || atom.state !== 'COMPLETED') continue;
      done++;
      if (atom.exit_code !== 0) {
        failed++;
        failures.push(atom);
      }
    }
  }
  return { done, failed, running, failures };
}

/**
 * Polls the build until it is terminal; the first signal cancels it, after which it waits (bounded) for the
 * cancel to take effect. Returns the terminal build, or null when it could not be followed to its end.
 */
async function waitForBuild(options: FollowOptions, buildId: number): Promise<BuildView | null> {
  const { client, conf, out, interrupt, isQuiet } = options;
  // With --json, stdout is the JSON document: the live view goes to stderr.
  const stream = out.isJson ? process.stderr : process.stdout;
  const progress = createProgressReporter({ stream, isTty: stream.isTTY === true });
  let cancelDeadline: number | null = null;
  let unreachableSince: number | null = null;
  let counts: AtomCounts | null = null;
  let nextSubjobPollAt = 0;
  const reportedFailures = new Set<string>();
  /** When this command first saw the build BUILDING: the ETA is the pace since then. */
  let buildingSince: number | null = null;
  const say = (line: string) => {
    progress.clear();
    out.info(stream.isTTY === true ? line : `${timestamp()} ${line}`);
  };

  for (;;) {
    if (interrupt.aborted && cancelDeadline === null) {
      say(`canceling build ${buildId}…`);
      cancelDeadline = Date.now() + conf.killGraceMs + CANCEL_SLACK_MS;
      try {
        await client.cancelBuild(buildId);
      } catch (error) {
        progress.clear();
        out.problem(`could not cancel build ${buildId}: ${errorMessage(error)}`);
        return null;
      }
    }
    let build: BuildView;
    try {
      build = await client.getBuild(buildId);
      unreachableSince = null;
    } catch (error) {
      if (!isUnreachable(error)) {
        progress.clear();
        out.problem(`lost track of build ${buildId}: ${errorMessage(error)}`);
        return null;
      }
      // A master restart loses nothing (SPEC §5): wait for it to come back, for a while.
      unreachableSince ??= Date.now();
      if (Date.now() - unreachableSince > UNREACHABLE_LIMIT_MS) {
        progress.clear();
        out.problem(`${errorMessage(error)} for over ${UNREACHABLE_LIMIT_MS / 1000} s; build ${buildId} may still be running: see ${client.url}/v1/build/${buildId}`);
        return null;
      }
      await pause(POLL_MS, interrupt, cancelDeadline);
      continue;
    }
    if (isTerminalStatus(build.status)) {
      progress.clear();
      return build;
    }
    if (cancelDeadline !== null && Date.now() > cancelDeadline) {
      progress.clear();
      out.problem(`build ${buildId} was canceled but is still ${build.status}; see ${client.url}/v1/build/${buildId}`);
      return null;
    }
    if (build.status === 'BUILDING' && (build.num_atoms ?? 0) > 0 && Date.now() >= nextSubjobPollAt) {
      // One request for every atom's state; spaced out as the list grows with the build.
      try {
        counts = countAtoms(await client.listSubjobs(buildId));
      } catch {
        // Progress is a nicety: the next poll tries again.
      }
      nextSubjobPollAt = Date.now() + Math.min(MAX_SUBJOB_POLL_MS, Math.max(POLL_MS, (build.num_atoms ?? 0) / 4));
      for (const atom of counts?.failures ?? []) {
        if (reportedFailures.has(atomKey(atom)) || reportedFailures.size >= MAX_LIVE_FAILURES) continue;
        reportedFailures.add(atomKey(atom));
        say(`FAILED ${atomName(atom)} (exit code ${atom.exit_code}): ${neutraliseLine(atom.command_string)}`);
      }
    }
    const done = counts?.done ?? 0;
    if (build.status === 'BUILDING') buildingSince ??= Date.now();
    const total = build.num_atoms;
    let etaSeconds: number | null = null;
    if (buildingSince !== null && total !== null && done > 0 && done < total) {
      etaSeconds = ((Date.now() - buildingSince) / done) * (total - done) / 1000;
    }
    const update: BuildProgress = {
      buildId,
      status: build.status,
      atomsTotal: total,
      atomsDone: total === null ? null : done,
      atomsFailed: counts?.failed ?? 0,
      atomsRunning: counts?.running.length ?? 0,
      runningAtoms: (counts?.running ?? []).slice(0, RUNNING_NAMES).map((atom) => atom.command_string),
      etaSeconds,
    };
    if (!isQuiet) progress.update(update);
    await pause(POLL_MS, interrupt, cancelDeadline);
  }
}

/** Sleeps ms, cut short by the first signal (so that the cancel goes out at once). */
async function pause(ms: number, interrupt: AbortSignal, cancelDeadline: number | null): Promise<void> {
  const wakeOnSignal = cancelDeadline === null && !interrupt.aborted;
  await sleep(ms, undefined, wakeOnSignal ? { signal: interrupt } : undefined).catch(() => undefined);
}

/** `build 3: FAILURE, 40 atoms (38 passed, 2 failed) in 1m12s` */
export function summaryLine(build: BuildView): string {
  const failed = build.failed_atoms?.length ?? 0;
  // Lists cap failed_atoms (SPEC §11) and give the full count beside it.
  const numFailed = typeof build['num_failed_atoms'] === 'number' ? build['num_failed_atoms'] : failed;
  let text = `build ${build.id}: ${build.status}`;
  if (build.num_atoms !== null) {
    text += `, ${build.num_atoms} atoms (${Math.max(0, build.num_atoms - numFailed)} passed, ${numFailed} failed)`;
  }
  const { queued, finished } = build.state_timestamps;
  if (queued !== undefined && finished !== undefined) text += ` in ${formatDuration(finished - queued)}`;
  return text;
}

async function reportBuild(options: FollowOptions, build: BuildView): Promise<number> {
  const { client, out } = options;
  const failed = build.failed_atoms ?? [];
  out.result(`${summaryLine(build)}${options.interrupt.aborted && build.status === 'CANCELED' ? ' (canceled by you)' : ''}`);
  if (build.status === 'SUCCESS' && build.num_atoms === 0) {
    out.problem('warning: NO ATOM RAN: the atomizers of this job printed nothing, so nothing was tested. ' +
      'The build counts as SUCCESS; set `allow_no_atoms: false` in the job to make this an ERROR.');
  }

  await printFailedTests(options, build);
  for (const atom of failed.slice(0, MAX_FAILED_ATOMS_SHOWN)) {
    out.result('');
    out.result(`failed ${atomName(atom)} (exit code ${atom.exit_code}): ${neutraliseLine(atom.command_string)}`);
    try {
      const page = await client.atomConsoleTail(build.id, atom.subjob_id, atom.id, CONSOLE_TAIL_LINES);
      if (page.content === '') {
        out.result('  (no console output)');
      } else {
        const skipped = page.total_num_lines - page.num_lines;
        if (skipped > 0) out.result(`  … ${skipped} earlier lines`);
        for (const line of neutraliseBlock(page.content).replace(/\n$/, '').split('\n')) out.result(`  | ${line}`);
      }
    } catch (error) {
      out.result(`  (console output unavailable: ${errorMessage(error)})`);
    }
  }
  if (failed.length > MAX_FAILED_ATOMS_SHOWN) {
    out.result('');
    out.result(`${failed.length - MAX_FAILED_ATOMS_SHOWN} more failed atoms (their output is in the results folder, see failures.txt):`);
    for (const atom of failed.slice(MAX_FAILED_ATOMS_SHOWN, MAX_FAILED_ATOMS_LISTED)) out.result(`  ${neutraliseLine(atom.command_string)}`);
    if (failed.length > MAX_FAILED_ATOMS_LISTED) out.result(`  … and ${failed.length - MAX_FAILED_ATOMS_LISTED} more`);
  }
  if (build.status === 'ERROR') {
    out.result('');
    out.result(`error: ${neutraliseBlock(build.error_message ?? '(the master gave no reason)')}`);
  }

  let results: { folder: string; files: number } | null = null;
  if (options.resultsRoot !== null) {
    if (build.artifacts === null) {
      out.problem(`the master has no artifact archive for build ${build.id}; nothing was downloaded`);
    } else {
      try {
        results = await downloadResults(client, build.id, { resultsRoot: options.resultsRoot });
        out.result(`artifacts: ${results.folder} (${results.files} files)`);
      } catch (error) {
        out.problem(`could not download the artifacts of build ${build.id}: ${errorMessage(error)}; ` +
          `earlier results were left as they were; get them with \`clusterrunner artifacts ${build.id}\` or from ${client.url}/v1/build/${build.id}/artifacts.tar.gz`);
      }
    }
  }
  if (failed.length > 0 || build.status !== 'SUCCESS') out.info(nextStep(build, results?.folder ?? null));
  if (out.isJson) out.json({ build, results: results?.folder ?? null });
  return exitCodeForStatus(build.status);
}

function nextStep(build: BuildView, folder: string | null): string {
  switch (build.status) {
    case 'FAILURE':
      return folder === null
        ? `See an atom's output with \`clusterrunner logs ${build.id} --atom SUBJOB/ATOM\`; run the failed atoms again with \`clusterrunner retry ${build.id}\`.`
        : `Each atom's output, exit code and artifacts are in ${folder}/artifact_<subjob>_<atom>/; run the failed atoms again with \`clusterrunner retry ${build.id}\`.`;
    case 'ERROR':
      return 'Fix what the error names (the project, its clusterrunner.yaml or its setup) and run the build again; `clusterrunner validate` checks the job file here.';
    case 'CANCELED':
      return 'The build was canceled; run it again when you are ready.';
    default:
      return '';
  }
}
