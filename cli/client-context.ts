/**
 * What the commands that talk to a master share: the conf (from -c, or the default file), the master's URL
 * (-m, else the conf's master_url, else the local master on the port of the conf's [master] section),
 * a signed client, and the words for a refusal.
 */
import { loadConf, type Conf } from '../shared/conf.ts';
import { ClusterRunnerError, errorMessage } from '../shared/errors.ts';
import { loadCommandConf, type CommonFlags } from './common.ts';
import { createCommandOutput, type CommandOutput } from './command-output.ts';
import { exitCodeForError, usageError } from './exit-codes.ts';
import { localMasterUrl } from './local-cluster.ts';
import { isAuthenticationRefusal, isUnreachable, MasterClient } from './master-client.ts';

export interface ClientFlags extends CommonFlags {
  readonly masterUrl?: string;
  readonly json?: boolean;
}

export interface ClientContext {
  readonly conf: Conf;
  readonly client: MasterClient;
  /** No -m: the master of this machine's local mode (or the conf's master_url). */
  readonly isLocal: boolean;
}

/** Loads the conf and makes the client; a bad conf throws (BAD_CONF, exit 3). */
export function openClient(flags: ClientFlags): ClientContext {
  const conf = loadClientConf(flags);
  const isLocal = flags.masterUrl === undefined;
  const url = isLocal ? localMasterUrl(conf) : conf.masterUrl;
  return { conf, client: new MasterClient({ url, secret: conf.secret }), isLocal };
}

/**
 * The client's view of the conf, with `port` taken from the sections a master started from this conf would
 * read ([general] then [master]): local mode starts that master, so it must look for it on that port.
 */
export function loadClientConf(flags: ClientFlags): Conf {
  const conf = loadCommandConf('client', flags, { master_url: flags.masterUrl });
  const masterPort = loadConf({ file: conf.confFile, role: 'master', env: process.env }).port;
  return Object.freeze({ ...conf, port: masterPort });
}

/** Where the secret used for signing came from, for a 401's explanation. */
export function secretSource(conf: Conf): string {
  const fromEnv = process.env['CLUSTERRUNNER_SECRET'];
  return fromEnv !== undefined && fromEnv !== '' ? 'the environment variable CLUSTERRUNNER_SECRET' : `the secret of ${conf.confFile}`;
}

/** A refusal in words a user can act on: which secret was used, which master was asked. */
export function explainError(error: unknown, context: { readonly conf: Conf; readonly client: MasterClient; readonly isLocal: boolean }): string {
  const message = errorMessage(error);
  if (isAuthenticationRefusal(error)) {
    return `${message}\nThe request was signed with ${secretSource(context.conf)}, and ${context.client.url} does not share it: ` +
      'copy the master\'s `secret` into that file (or pass the master\'s conf with -c).';
  }
  if (isUnreachable(error)) {
    return context.isLocal
      ? `${message}\nNo master runs at ${context.client.url} (master_url or [master] port of ${context.conf.confFile}); pass -m/--master-url, or start one with \`clusterrunner build\` or \`clusterrunner master\`.`
      : `${message}\nIs a master running there? Check -m/--master-url.`;
  }
  if (error instanceof ClusterRunnerError && error.status === 404 && /\/retry\b/.test(message)) {
    return `${message}\nThis master has no retry endpoint (SPEC §10) yet.`;
  }
  return message;
}

/**
 * Runs one client command: opens the client, runs fn, and turns any error into its explanation on stderr
 * and its exit code (cli/exit-codes.ts).
 */
export async function runClientCommand(flags: ClientFlags, fn: (context: ClientContext, out: CommandOutput) => Promise<number>): Promise<number> {
  const out = createCommandOutput(flags);
  let context: ClientContext;
  try {
    context = openClient(flags);
  } catch (error) {
    out.problem(errorMessage(error));
    return exitCodeForError(error);
  }
  try {
    return await fn(context, out);
  } catch (error) {
    out.problem(explainError(error, context));
    return exitCodeForError(error);
  }
}

/** A build id argument: a whole number, else a usage error naming it. */
export function parseBuildId(text: string): number {
  if (!/^\d{1,15}$/.test(text.trim())) throw usageError(`the build id must be a whole number, not ${JSON.stringify(text)}`);
  return Number(text.trim());
}

/** `SUBJOB/ATOM` as the CLI prints it (`atom 1/0`). */
export function parseAtomRef(text: string, what = '--atom'): { readonly subjobId: number; readonly atomId: number } {
  const match = /^(\d{1,9})\/(\d{1,9})$/.exec(text.trim());
  if (!match) throw usageError(`${what} takes SUBJOB/ATOM ids, e.g. 1/0 (got ${JSON.stringify(text)})`);
  return { subjobId: Number(match[1]), atomId: Number(match[2]) };
}
