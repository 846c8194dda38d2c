/**
 * The exit codes of every `clusterrunner` command, stable for CI scripts (issue 16): what a build ended
 * as, or why no build could be followed at all.
 */
import { ClusterRunnerError } from '../shared/errors.ts';
import { CONF_ERROR } from '../shared/conf.ts';

export const EXIT_SUCCESS = 0;
export const EXIT_FAILURE = 1;
/** The build ended ERROR or CANCELED, or the master refused or lost what was asked. */
export const EXIT_ERROR = 2;
/** Bad arguments, a bad conf file or job file, a secret the master does not share. */
export const EXIT_USAGE = 3;
/** No master answered (refused connection, unknown host, no answer in time). */
export const EXIT_UNREACHABLE = 4;

/** What --help and the README say. */
export const EXIT_CODES_HELP =
  'Exit codes: 0 SUCCESS, 1 FAILURE, 2 ERROR or CANCELED (or the master refused the request), ' +
  '3 usage or configuration error, 4 master unreachable.';

/** Error codes that mean "fix your command line or configuration". */
const USAGE_CODES = new Set(['USAGE', CONF_ERROR, 'IDENTITY_NOT_PROVEN', 'BAD_JOB_FILE', 'BAD_JOB_CONFIG', 'JOB_NAME_REQUIRED', 'UNKNOWN_JOB']);

export function usageError(message: string): ClusterRunnerError {
  return new ClusterRunnerError('USAGE', message, { status: 400 });
}

export function exitCodeForStatus(status: string): number {
  switch (status) {
    case 'SUCCESS':
      return EXIT_SUCCESS;
    case 'FAILURE':
      return EXIT_FAILURE;
    default:
      return EXIT_ERROR;
  }
}

export function exitCodeForError(error: unknown): number {
  if (!(error instanceof ClusterRunnerError)) return EXIT_ERROR;
  if (error.code === 'MASTER_UNREACHABLE') return EXIT_UNREACHABLE;
  if (USAGE_CODES.has(error.code)) return EXIT_USAGE;
  // 401: our signature did not match, i.e. the conf's secret is not the master's.
  if (error.code === 'MASTER_REFUSED' && error.status === 401) return EXIT_USAGE;
  return EXIT_ERROR;
}
