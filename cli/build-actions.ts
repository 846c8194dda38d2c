/**
 * `clusterrunner cancel ID`, `retry ID`, `attach ID` and `artifacts ID [-o DIR]` (issue 16): acting on a
 * build that already exists. `attach` and `retry` follow the build to its end as `build` does
 * (cli/follow-build.ts) and exit with its result.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { cancelOnStopSignals, commandLogger } from './common.ts';
import { parseAtomRef, parseBuildId, runClientCommand, type ClientContext, type ClientFlags } from './client-context.ts';
import type { CommandOutput } from './command-output.ts';
import { DEFAULT_RESULTS_FOLDER, downloadResults } from './build-results.ts';
import { EXIT_SUCCESS, usageError } from './exit-codes.ts';
import { followBuild } from './follow-build.ts';

export interface FollowFlags extends ClientFlags {
  /** --results DIR; commander sets false for --no-results. */
  readonly results?: string | false;
}

export interface RetryFlags extends FollowFlags {
  readonly atom?: readonly string[];
  /** commander sets false for --no-wait. */
  readonly wait?: boolean;
}

export function runCancelCommand(id: string, flags: ClientFlags): Promise<number> {
  return runClientCommand(flags, async ({ client }, out) => {
    const buildId = parseBuildId(id);
    await client.cancelBuild(buildId);
    if (out.isJson) out.json({ build_id: buildId, STATUS: 'SUCCESS' });
    else out.result(`build ${buildId}: cancel requested; its atoms are being stopped (see \`clusterrunner status ${buildId}\`)`);
    return EXIT_SUCCESS;
  });
}

/** Follows buildId like `build` does: the first Ctrl-C cancels the build, a second one leaves at once. */
async function follow(context: ClientContext, out: CommandOutput, flags: FollowFlags, buildId: number): Promise<number> {
  const log = commandLogger('attach', context.conf);
  const { signal: interrupted, remove: removeSignals } = cancelOnStopSignals(log);
  try {
    const resultsRoot = flags.results === false ? null : path.resolve(flags.results ?? DEFAULT_RESULTS_FOLDER);
    return await followBuild({ client: context.client, conf: context.conf, out, interrupt: interrupted, isQuiet: flags.quiet === true, resultsRoot }, buildId);
  } finally {
    removeSignals();
  }
}

export function runAttachCommand(id: string, flags: FollowFlags): Promise<number> {
  return runClientCommand(flags, async (context, out) => {
    const buildId = parseBuildId(id);
    // An unknown id is a 404 now, not a wait.
    const build = await context.client.getBuild(buildId);
    out.info(`following build ${buildId} (${build.status}) on ${context.client.url}`);
    return follow(context, out, flags, buildId);
  });
}

/** Collector for the repeatable --atom of retry. */
export function collectAtom(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function runRetryCommand(id: string, flags: RetryFlags): Promise<number> {
  return runClientCommand(flags, async (context, out) => {
    const buildId = parseBuildId(id);
    const atoms = (flags.atom ?? []).map((ref) => {
      const { subjobId, atomId } = parseAtomRef(ref);
      return `${subjobId}/${atomId}`;
    });
    const answer = await context.client.retryBuild(buildId, atoms);
    if (flags.wait === false) {
      if (out.isJson) out.json(answer);
      else out.result(`build ${buildId}: ${answer.num_atoms_retried} atoms run again`);
      return EXIT_SUCCESS;
    }
    out.info(`build ${buildId}: ${answer.num_atoms_retried} atoms run again; following it`);
    return follow(context, out, flags, buildId);
  });
}

export interface ArtifactsFlags extends ClientFlags {
  readonly output?: string;
}

export function runArtifactsCommand(id: string, flags: ArtifactsFlags): Promise<number> {
  return runClientCommand(flags, async ({ client }, out) => {
    const buildId = parseBuildId(id);
    // The folder is replaced by the archive's content: never one that holds something (`-o .`, `-o ~`).
    if (flags.output !== undefined && (await readdir(flags.output).catch(() => [])).length > 0) {
      throw usageError(`-o ${flags.output} is not empty; name a new folder (or an empty one)`);
    }
    const target = flags.output !== undefined ? { exactFolder: flags.output } : { resultsRoot: DEFAULT_RESULTS_FOLDER };
    const results = await downloadResults(client, buildId, target);
    if (out.isJson) out.json({ build_id: buildId, folder: results.folder, files: results.files, bytes: results.bytes });
    else out.result(`artifacts of build ${buildId}: ${results.folder} (${results.files} files)`);
    return EXIT_SUCCESS;
  });
}
