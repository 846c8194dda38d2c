/**
 * Where a command's words go. Results on stdout, problems on stderr prefixed `clusterrunner:`; with
 * --json, stdout carries exactly one JSON document and everything for people goes to stderr, so that
 * `clusterrunner status 3 --json | jq` always parses.
 */
import { neutraliseBlock } from './terminal-text.ts';

export interface CommandOutput {
  /** True with --json: `info` goes to stderr, `json` is the only thing on stdout. */
  readonly isJson: boolean;
  /** Progress and hints; silenced by -q. Build text in it must be neutralised by the caller. */
  info(line: string): void;
  /** The result people read (stdout without --json, stderr with it). */
  result(line: string): void;
  /** A problem, on stderr. */
  problem(line: string): void;
  /** The --json document. */
  json(value: unknown): void;
}

export function createCommandOutput(flags: { readonly json?: boolean; readonly quiet?: boolean }): CommandOutput {
  const isJson = flags.json === true;
  const people = isJson ? process.stderr : process.stdout;
  return {
    isJson,
    info: (line) => {
      if (flags.quiet !== true) people.write(`${line}\n`);
    },
    result: (line) => people.write(`${line}\n`),
    problem: (line) => process.stderr.write(`clusterrunner: ${neutraliseBlock(line)}\n`),
    json: (value) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
  };
}

let isGuarded = false;

/**
 * `clusterrunner list | head -1`: once the reader has gone, writing to stdout fails with EPIPE, which Node
 * raises as an unhandled 'error' event (a stack trace). The reader asked for no more output, so we stop
 * quietly, as programs killed by SIGPIPE do; the exit code is the command's so far (0 if it had none).
 */
export function endQuietlyOnClosedOutput(): void {
  if (isGuarded) return;
  isGuarded = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EPIPE' || error.code === 'ERR_STREAM_DESTROYED') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
      throw error;
    });
  }
}
