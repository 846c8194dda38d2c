/**
 * `clusterrunner build` (SPEC §8): asks a master to run one job, shows its progress, prints what failed,
 * downloads the artifacts into ./build_results/ and exits 0 (SUCCESS), 1 (FAILURE) or 2 (ERROR, CANCELED,
 * or no build at all). Without --master-url it runs in local mode and brings up a master and a worker on
 * this machine first (cli/local-cluster.ts).
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSafeExtractor } from '../shared/archive.ts';
import type { Conf } from '../shared/conf.ts';
import { ClusterRunnerError, errorMessage } from '../shared/errors.ts';
import { commandLogger, loadCommandConf, onStopSignals, type CommonFlags } from './common.ts';
import { ensureLocalCluster, localMasterUrl } from './local-cluster.ts';
import {
  isAuthenticationRefusal,
  isTerminalStatus,
  isUnreachable,
  MasterClient,
  type AtomView,
  type BuildRequest,
  type BuildView,
} from './master-client.ts';
import { createProgressReporter, type BuildProgress } from './progress.ts';

export interface BuildFlags extends CommonFlags {
  readonly masterUrl?: string;
  readonly jobName?: string;
  /** `NAME=URL` pairs (see joinRemoteFileArguments). */
  readonly remoteFile?: readonly string[];
}

/** The sub-form after the build flags: `git --url …` or `directory [--project-directory P]`. */
export type BuildSource =
  | { readonly type: 'git'; readonly url: string; readonly branch?: string; readonly hash?: string; readonly projectDirectory?: string }
  | { readonly type: 'directory'; readonly projectDirectory?: string };

export const EXIT_SUCCESS = 0;
export const EXIT_FAILURE = 1;
/** ERROR, CANCELED, or no build at all (master unreachable, request refused, bad arguments). */
export const EXIT_ERROR = 2;

const RESULTS_FOLDER = 'build_results';
const POLL_MS = 300;
/** Longest pause between two subjob listings of a huge build: the list grows with the atoms. */
const MAX_SUBJOB_POLL_MS = 10_000;
/** How long the build may stay out of reach (a master restart) before we give up waiting. */
const UNREACHABLE_LIMIT_MS = 60_000;
/** Beyond kill_grace: how long a canceled build may take to become terminal. */
const CANCEL_SLACK_MS = 30_000;
const ARTIFACT_WAIT_MS = 60_000;
const CONSOLE_TAIL_LINES = 20;
/** Failed atoms whose console is fetched and shown; the rest are listed by name only. */
const MAX_FAILED_ATOMS_SHOWN = 20;
const MAX_FAILED_ATOMS_LISTED = 200;
// The archive comes from a master we trust to run our builds, but a runaway job can still fill a disk.
const ARTIFACT_LIMITS = { maxBytes: 64 * 1024 ** 3, maxEntries: 10_000_000, maxDepth: 64 };

/**
 * Commander options take one value; `-f NAME URL` takes two. This rewrites every `-f NAME URL` (and
 * `--remote-file NAME URL`) of the build command into `--remote-file NAME=URL` before commander parses it.
 * `-f NAME=URL` is accepted as it is.
 */
export function joinRemoteFileArguments(argv: readonly string[]): string[] {
  const commandAt = argv.findIndex((arg) => !arg.startsWith('-'));
  if (commandAt < 0 || argv[commandAt] !== 'build') return [...argv];
  const out = argv.slice(0, commandAt + 1);
  for (let index = commandAt + 1; index < argv.length; index++) {
    const arg = argv[index]!;
    if (arg === '--') {
      out.push(...argv.slice(index));
      break;
    }
    const name = argv[index + 1];
    const url = argv[index + 2];
    if ((arg === '-f' || arg === '--remote-file') && name !== undefined && !name.includes('=') && url !== undefined && !url.startsWith('-')) {
      out.push('--remote-file', `${name}=${url}`);
      index += 2;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/** Commander's collector for the repeatable -f. */
export function collectRemoteFile(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** The POST /v1/build body (SPEC §3 keys), or a usage error. */
export function buildRequestBody(flags: BuildFlags, source: BuildSource, cwd: string): BuildRequest {
  const remoteFiles: Record<string, string> = {};
  for (const pair of flags.remoteFile ?? []) {
    const at = pair.indexOf('=');
    const name = at > 0 ? pair.slice(0, at) : '';
    const url = at > 0 ? pair.slice(at + 1) : '';
    if (name === '' || url === '') throw usage(`-f/--remote-file takes a file name and a URL: -f NAME URL (got "${pair}")`);
    if (Object.hasOwn(remoteFiles, name)) throw usage(`-f/--remote-file names "${name}" twice`);
    remoteFiles[name] = url;
  }
  const common = {
    ...(flags.jobName !== undefined ? { job_name: flags.jobName } : {}),
    ...(Object.keys(remoteFiles).length > 0 ? { remote_files: remoteFiles } : {}),
  };
  if (source.type === 'git') {
    return {
      type: 'git',
      url: source.url,
      ...(source.branch !== undefined ? { branch: source.branch } : {}),
      ...(source.hash !== undefined ? { hash: source.hash } : {}),
      ...(source.projectDirectory !== undefined ? { project_directory: source.projectDirectory } : {}),
      ...common,
    };
  }
  // The master needs an absolute path; a relative one means "from where I am".
  return { type: 'directory', project_directory: path.resolve(cwd, source.projectDirectory ?? '.'), ...common };
}

function usage(message: string): ClusterRunnerError {
  return new ClusterRunnerError('USAGE', message, { status: 400 });
}

interface Output {
  /** Normal output (stdout); silenced by -q except for the result. */
  info(line: string): void;
  /** The result and what failed (stdout), always shown. */
  result(line: string): void;
  /** Problems (stderr), always shown. */
  problem(line: string): void;
}

export async function runBuildCommand(flags: BuildFlags, source: BuildSource): Promise<number> {
  const isQuiet = flags.quiet === true;
  const out: Output = {
    info: (line) => {
      if (!isQuiet) process.stdout.write(`${line}\n`);
    },
    result: (line) => process.stdout.write(`${line}\n`),
    problem: (line) => process.stderr.write(`clusterrunner: ${line}\n`),
  };

  let conf: Conf;
  let request: BuildRequest;
  try {
    conf = loadCommandConf('client', flags, { master_url: flags.masterUrl });
    request = buildRequestBody(flags, source, process.cwd());
  } catch (error) {
    out.problem(errorMessage(error));
    return EXIT_ERROR;
  }
  const log = commandLogger('build', conf);
  const isLocal = flags.masterUrl === undefined;
  const url = isLocal ? localMasterUrl(conf) : conf.masterUrl;
  const client = new MasterClient({ url, secret: conf.secret });

  // First signal: cancel the build and finish as usual; a second one: leave at once.
  const interrupt = new AbortController();
  const removeSignals = onStopSignals(
    (signal) => {
      log.debug({ signal }, 'canceling on signal');
      interrupt.abort(signal);
    },
    (signal) => {
      process.stderr.write(`\nclusterrunner: ${signal} again: leaving without waiting for the build\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    },
  );
  try {
    if (isLocal) {
      try {
        await ensureLocalCluster({ conf, url, say: out.info, signal: interrupt.signal });
      } catch (error) {
        if (interrupt.signal.aborted) {
          out.problem('interrupted before the build was started');
          return EXIT_ERROR;
        }
        out.problem(`${errorMessage(error)}`);
        return EXIT_ERROR;
      }
    }

    let buildId: number;
    try {
      buildId = await client.createBuild(request);
    } catch (error) {
      out.problem(explainRefusal(error, conf, isLocal));
      return EXIT_ERROR;
    }
    log.debug({ buildId, request }, 'build created');
    out.info(`build ${buildId} queued on ${url}: ${describeRequest(request)}`);

    const build = await waitForBuild(client, buildId, conf, out, interrupt.signal, isQuiet);
    if (build === null) return EXIT_ERROR;
    return await reportBuild(client, build, out, interrupt.signal.aborted);
  } finally {
    removeSignals();
  }
}

function describeRequest(request: BuildRequest): string {
  const parts = request.type === 'git'
    ? [`git ${request.url}`, request.branch && `branch ${request.branch}`, request.hash && `commit ${request.hash}`, request.project_directory && `folder ${request.project_directory}`]
    : [request.project_directory];
  parts.push(request.job_name && `job ${request.job_name}`);
  return parts.filter(Boolean).join(', ');
}

function explainRefusal(error: unknown, conf: Conf, isLocal: boolean): string {
  const message = errorMessage(error);
  if (isAuthenticationRefusal(error)) {
    return `${message}\nThe secret in ${conf.confFile} is not the master's: copy the master's \`secret\` into it (or use -c with the master's conf file).`;
  }
  if (isUnreachable(error)) {
    return isLocal
      ? `${message}\nCheck master_url in ${conf.confFile}, or run \`clusterrunner stop -c ${conf.confFile}\` and build again to start a fresh local cluster.`
      : `${message}\nIs a master running there? Start one with \`clusterrunner master\`, pass the right --master-url, or leave --master-url out to run the build on this machine.`;
  }
  if (error instanceof ClusterRunnerError && error.status >= 400 && error.status < 500) {
    return `${message}\nFix the build arguments and try again (\`clusterrunner build --help\`).`;
  }
  return message;
}

/**
 * Polls the build until it is terminal; the first signal cancels it, after which it waits (bounded) for the
 * cancel to take effect. Returns the terminal build, or null when it could not be followed to its end.
 */
async function waitForBuild(client: MasterClient, buildId: number, conf: Conf, out: Output, interrupt: AbortSignal, isQuiet: boolean): Promise<BuildView | null> {
  const isTty = process.stdout.isTTY === true;
  const progress = createProgressReporter({ stream: process.stdout, isTty });
  let cancelDeadline: number | null = null;
  let unreachableSince: number | null = null;
  let atoms: { done: number; failed: number } | null = null;
  let nextSubjobPollAt = 0;
  const show = (update: BuildProgress) => {
    if (!isQuiet) progress.update(update);
  };

  for (;;) {
    if (interrupt.aborted && cancelDeadline === null) {
      progress.clear();
      out.info(`canceling build ${buildId}…`);
      cancelDeadline = Date.now() + conf.killGraceMs + CANCEL_SLACK_MS;
      try {
        await client.cancelBuild(buildId);
      } catch (error) {
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
    if (build.status === 'BUILDING' && (build.num_atoms ?? 0) > 0 && Date.now() >= nextSubjobPollAt && !isQuiet) {
      // One request for every atom's exit code; spaced out as the list grows with the build.
      try {
        atoms = countAtoms(await client.listSubjobs(buildId));
      } catch {
        // Progress is a nicety: the next poll tries again.
      }
      nextSubjobPollAt = Date.now() + Math.min(MAX_SUBJOB_POLL_MS, Math.max(POLL_MS, (build.num_atoms ?? 0) / 4));
    }
    show({
      buildId,
      status: build.status,
      atomsTotal: build.num_atoms,
      atomsDone: build.num_atoms === null ? null : (atoms?.done ?? 0),
      atomsFailed: atoms?.failed ?? 0,
    });
    await pause(POLL_MS, interrupt, cancelDeadline);
  }
}

/** Sleeps ms, cut short by the first signal (so that the cancel goes out at once). */
async function pause(ms: number, interrupt: AbortSignal, cancelDeadline: number | null): Promise<void> {
  const wakeOnSignal = cancelDeadline === null && !interrupt.aborted;
  await sleep(ms, undefined, wakeOnSignal ? { signal: interrupt } : undefined).catch(() => undefined);
}

function countAtoms(subjobs: readonly { atoms: readonly AtomView[] }[]): { done: number; failed: number } {
  let done = 0;
  let failed = 0;
  for (const subjob of subjobs) {
    for (const atom of subjob.atoms) {
      if (atom.exit_code === null) continue;
      done++;
      if (atom.exit_code !== 0) failed++;
    }
  }
  return { done, failed };
}

async function reportBuild(client: MasterClient, build: BuildView, out: Output, wasInterrupted: boolean): Promise<number> {
  const failed = build.failed_atoms ?? [];
  const atomCount = build.num_atoms === null ? '' : `, ${build.num_atoms} atoms`;
  const failedCount = failed.length > 0 ? `, ${failed.length} failed` : '';
  out.result(`build ${build.id}: ${build.status}${atomCount}${failedCount}${wasInterrupted && build.status === 'CANCELED' ? ' (canceled by you)' : ''}`);

  for (const atom of failed.slice(0, MAX_FAILED_ATOMS_SHOWN)) {
    out.result('');
    out.result(`failed atom ${atom.id} of subjob ${atom.subjob_id} (exit code ${atom.exit_code}): ${atom.command_string}`);
    try {
      const page = await client.atomConsoleTail(build.id, atom.subjob_id, atom.id, CONSOLE_TAIL_LINES);
      if (page.content === '') {
        out.result('  (no console output)');
      } else {
        const skipped = page.total_num_lines - page.num_lines;
        if (skipped > 0) out.result(`  … ${skipped} earlier lines`);
        for (const line of page.content.replace(/\n$/, '').split('\n')) out.result(`  | ${line}`);
      }
    } catch (error) {
      out.result(`  (console output unavailable: ${errorMessage(error)})`);
    }
  }
  if (failed.length > MAX_FAILED_ATOMS_SHOWN) {
    out.result('');
    out.result(`${failed.length - MAX_FAILED_ATOMS_SHOWN} more failed atoms (their output is in ${RESULTS_FOLDER}/, see failures.txt):`);
    for (const atom of failed.slice(MAX_FAILED_ATOMS_SHOWN, MAX_FAILED_ATOMS_LISTED)) out.result(`  ${atom.command_string}`);
    if (failed.length > MAX_FAILED_ATOMS_LISTED) out.result(`  … and ${failed.length - MAX_FAILED_ATOMS_LISTED} more`);
  }
  if (build.status === 'ERROR') {
    out.result('');
    out.result(`error: ${build.error_message ?? '(the master gave no reason)'}`);
  }

  if (build.artifacts === null) {
    out.problem(`the master has no artifact archive for build ${build.id}; nothing was downloaded`);
  } else {
    const destination = path.resolve(RESULTS_FOLDER);
    try {
      const summary = await downloadArtifacts(client, build.id, destination);
      out.result(`artifacts: ${destination} (${summary.files} files)`);
    } catch (error) {
      out.problem(`could not download the artifacts of build ${build.id}: ${errorMessage(error)}; get them from ${client.url}/v1/build/${build.id}/artifacts.tar.gz`);
    }
  }
  if (failed.length > 0 || build.status !== 'SUCCESS') out.info(nextStep(build));

  switch (build.status) {
    case 'SUCCESS':
      return EXIT_SUCCESS;
    case 'FAILURE':
      return EXIT_FAILURE;
    default:
      return EXIT_ERROR;
  }
}

function nextStep(build: BuildView): string {
  switch (build.status) {
    case 'FAILURE':
      return `Each atom's output, exit code and artifacts are in ${RESULTS_FOLDER}/artifact_<subjob>_<atom>/.`;
    case 'ERROR':
      return 'Fix what the error names (the project, its clusterrunner.yaml or its setup) and run the build again.';
    case 'CANCELED':
      return 'The build was canceled; run it again when you are ready.';
    default:
      return '';
  }
}

/**
 * Downloads artifacts.tar.gz and unpacks it (refusing anything unsafe) into destination, replacing what was
 * there. It unpacks into a sibling folder first, so that a failed download never leaves half an archive
 * where the results of a build are expected.
 */
async function downloadArtifacts(client: MasterClient, buildId: number, destination: string): Promise<{ files: number; bytes: number }> {
  // The previous build's results would be taken for this one's.
  await rm(destination, { recursive: true, force: true });
  const partial = `${destination}.partial-${process.pid}`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });
  try {
    const response = await client.fetchArtifacts(buildId, { waitMs: ARTIFACT_WAIT_MS, retryMs: 500 });
    if (response.body === null) throw new Error('the master sent an empty answer');
    const source = Readable.fromWeb(response.body as unknown as WebReadableStream<Uint8Array>);
    const extractor = createSafeExtractor(partial, ARTIFACT_LIMITS);
    // The extractor swallows the rest of a refused archive; there is no point downloading it.
    extractor.done.catch(() => source.destroy());
    const [copied, unpacked] = await Promise.allSettled([pipeline(source, extractor.input), extractor.done]);
    if (unpacked.status === 'rejected') throw unpacked.reason;
    if (copied.status === 'rejected') throw copied.reason;
    await rename(partial, destination);
    return unpacked.value;
  } finally {
    await rm(partial, { recursive: true, force: true });
  }
}
