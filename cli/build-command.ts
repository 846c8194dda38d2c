/**
 * `clusterrunner build` (SPEC §8, issue 16): asks a master to run one job, follows it (cli/follow-build.ts),
 * downloads the artifacts into build_results/<id>/ and exits with the codes of cli/exit-codes.ts. Without
 * -m/--master-url it runs in local mode and brings up a master and a worker on this machine first
 * (cli/local-cluster.ts), after checking that a master already there holds our secret.
 */
import path from 'node:path';
import { isReservedVariable } from '../shared/job-config.ts';
import { errorMessage } from '../shared/errors.ts';
import { cancelOnStopSignals, commandLogger, type CommonFlags } from './common.ts';
import { explainError, openClient, type ClientContext } from './client-context.ts';
import { createCommandOutput } from './command-output.ts';
import { exitCodeForError, EXIT_ERROR, usageError } from './exit-codes.ts';
import { followBuild } from './follow-build.ts';
import { DEFAULT_RESULTS_FOLDER } from './build-results.ts';
import { ensureLocalCluster, logFilePath } from './local-cluster.ts';
import { followBuildEvents, giveUpSeconds } from './event-stream.ts';
import type { BuildRequest as ApiBuildRequest } from './master-client.ts';
import { neutraliseLine } from './terminal-text.ts';

export interface BuildFlags extends CommonFlags {
  readonly masterUrl?: string;
  readonly jobName?: string;
  /** `NAME=URL` pairs (see joinRemoteFileArguments). */
  readonly remoteFile?: readonly string[];
  /** `KEY=VALUE` pairs from -e. */
  readonly env?: readonly string[];
  readonly priority?: string;
  readonly json?: boolean;
  /** --results DIR; commander sets false for --no-results. */
  readonly results?: string | false;
}

/** The sub-form after the build flags: `git --url …` or `directory [--project-directory P]`. */
export type BuildSource =
  | { readonly type: 'git'; readonly url: string; readonly branch?: string; readonly hash?: string; readonly projectDirectory?: string }
  | { readonly type: 'directory'; readonly projectDirectory?: string };

/** The POST /v1/build body the CLI sends: SPEC §3, plus `environment` from -e (issue 16). */
export type BuildRequest = ApiBuildRequest & { readonly environment?: Readonly<Record<string, string>> };

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Bounds of -e: the variables travel in the build request and to every atom. */
const MAX_VARIABLES = 100;
const MAX_VARIABLE_VALUE_CHARS = 32 * 1024;

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
  const environment = parseVariables(flags.env ?? []);
  const common = {
    ...(flags.jobName !== undefined ? { job_name: flags.jobName } : {}),
    ...(Object.keys(remoteFiles).length > 0 ? { remote_files: remoteFiles } : {}),
    ...(Object.keys(environment).length > 0 ? { environment } : {}),
    ...(flags.priority !== undefined ? { priority: parsePriority(flags.priority) } : {}),
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

function usage(message: string) {
  return usageError(message);
}

/** -e KEY=VALUE (repeatable): the variables every atom, setup and teardown of the build sees. */
export function parseVariables(pairs: readonly string[]): Record<string, string> {
  if (pairs.length > MAX_VARIABLES) throw usage(`-e/--env is given ${pairs.length} times; at most ${MAX_VARIABLES} variables`);
  const variables: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    const key = at > 0 ? pair.slice(0, at) : pair;
    if (at <= 0 || !VARIABLE_NAME.test(key)) throw usage(`-e/--env takes KEY=VALUE with KEY a shell variable name (got ${JSON.stringify(pair.slice(0, 100))})`);
    if (isReservedVariable(key)) throw usage(`-e/--env cannot set ${key}: ClusterRunner sets it itself`);
    if (Object.hasOwn(variables, key)) throw usage(`-e/--env sets ${key} twice`);
    const value = pair.slice(at + 1);
    if (value.length > MAX_VARIABLE_VALUE_CHARS || value.includes('\0')) {
      throw usage(`-e/--env ${key}: the value must be at most ${MAX_VARIABLE_VALUE_CHARS} characters, without NUL`);
    }
    variables[key] = value;
  }
  return variables;
}

export function parsePriority(text: string): number {
  if (!/^-?\d{1,9}$/.test(text.trim())) throw usage(`--priority takes a whole number (higher runs first), not ${JSON.stringify(text)}`);
  return Number(text.trim());
}

/** Commander's collector for the repeatable -e. */
export function collectVariable(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export async function runBuildCommand(flags: BuildFlags, source: BuildSource): Promise<number> {
  const out = createCommandOutput(flags);
  let context: ClientContext;
  let request: BuildRequest;
  let giveUpMs: number;
  try {
    context = openClient(flags);
    request = buildRequestBody(flags, source, process.cwd());
    giveUpMs = giveUpSeconds() * 1000;
  } catch (error) {
    out.problem(errorMessage(error));
    return exitCodeForError(error);
  }
  const { conf, client, isLocal } = context;
  const log = commandLogger('build', conf);

  // First signal: cancel the build and finish as usual; a second one: leave at once.
  const { signal: interrupted, remove: removeSignals } = cancelOnStopSignals(log);
  try {
    if (isLocal) {
      try {
        await ensureLocalCluster({ conf, url: client.url, say: out.info, signal: interrupted });
      } catch (error) {
        if (interrupted.aborted) {
          out.problem('interrupted before the build was started');
          return EXIT_ERROR;
        }
        out.problem(errorMessage(error));
        return exitCodeForError(error);
      }
    }

    let buildId: number;
    try {
      buildId = await client.createBuild(request);
    } catch (error) {
      out.problem(explainError(error, context));
      return exitCodeForError(error);
    }
    log.debug({ buildId }, 'build created');
    out.info(`build ${buildId} queued on ${client.url}: ${neutraliseLine(describeRequest(request))}`);
    const resultsRoot = flags.results === false ? null : path.resolve(flags.results ?? DEFAULT_RESULTS_FOLDER);
    // The event stream carries the build to its end (riding out master restarts); the report that follows
    // reads the finished build once. An older master without /v2/events is polled instead.
    const streamed = await followBuildEvents({
      client, secret: conf.secret, buildId, out, interrupt: interrupted, isQuiet: flags.quiet === true, giveUpMs,
      masterLog: isLocal ? logFilePath(conf, 'master') : null,
      restartMaster: isLocal ? (signal) => ensureLocalCluster({ conf, url: client.url, say: out.info, signal }) : null,
    });
    if (streamed.kind === 'lost') {
      out.problem(streamed.message);
      return EXIT_ERROR;
    }
    return await followBuild({ client, conf, out, interrupt: interrupted, isQuiet: flags.quiet === true, resultsRoot }, buildId);
  } finally {
    removeSignals();
  }
}

function describeRequest(request: BuildRequest): string {
  const parts = request.type === 'git'
    ? [`git ${request.url}`, request.branch && `branch ${request.branch}`, request.hash && `commit ${request.hash}`, request.project_directory && `folder ${request.project_directory}`]
    : [request.project_directory];
  parts.push(request.job_name && `job ${request.job_name}`);
  if (request.environment !== undefined) parts.push(`variables ${Object.keys(request.environment).join(', ')}`);
  return parts.filter(Boolean).join(', ');
}
