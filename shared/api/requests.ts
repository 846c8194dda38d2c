/**
 * The bodies the master accepts (SPEC §2, §3), as zod schemas: the master validates with them and the
 * command line builds its requests from their types. Messages name the field, as SPEC §1 asks.
 */
import { isAbsolute, normalize } from 'node:path';
import { z } from 'zod';
import { START_REASON_KEYS, startReasonFields } from './start-reason.ts';
import { isReservedVariable } from '../job-config.ts';

/** The keys of POST /v1/build, either type; any other key is refused by name. */
export const BUILD_REQUEST_KEYS = [
  'type', 'url', 'branch', 'hash', 'remote', 'project_directory', 'job_name', 'config', 'remote_files',
  'atoms_override', 'priority', 'environment',
  ...START_REASON_KEYS,
] as const;

export const BUILD_TYPES = ['git', 'directory'] as const;
export type BuildType = (typeof BUILD_TYPES)[number];

/** The keys each type cannot do without (SPEC §3). */
export const REQUIRED_BUILD_KEYS: Readonly<Record<BuildType, readonly string[]>> = {
  git: ['url'],
  directory: ['project_directory'],
};

const url = z.string('"url" must be a string.').min(1, '"url" must not be empty.').max(4096);
const projectDirectory = z.string('"project_directory" must be a string.').min(1, '"project_directory" must not be empty.').max(4096);

/** Keys both types take. */
const COMMON = {
  ...startReasonFields,
  job_name: z.string('"job_name" must be a string.').min(1, '"job_name" must not be empty.').max(255).optional(),
  config: z.record(z.string(), z.unknown(), '"config" must be an object holding a job definition.').optional(),
  remote_files: z.record(
    z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/, 'remote_files names must be plain file names (letters, digits, . _ -).'),
    z.string().regex(/^https?:\/\/\S+$/i, 'remote_files values must be http(s) URLs.').max(4096),
    '"remote_files" must be an object of file name to URL.',
  ).optional(),
  atoms_override: z.array(z.string('"atoms_override" entries must be strings.').max(1024 * 1024), '"atoms_override" must be a list of atom strings.').max(1_000_000).optional(),
  priority: z.number('"priority" must be an integer.').int('"priority" must be an integer.').min(-1_000_000).max(1_000_000).optional(),
  /** Variables for every atom, setup and teardown of the build (`build -e KEY=VALUE`), bounded. */
  environment: z.record(
    z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'environment names must be shell variable names.')
      .refine((name) => !isReservedVariable(name), 'environment may not set a variable ClusterRunner sets itself (PROJECT_DIR, ARTIFACT_DIR, PATH, HOME, CLUSTERRUNNER_*, ...).'),
    z.string('environment values must be strings.').max(32 * 1024).refine((value) => !value.includes('\0'), 'environment values may not hold NUL.'),
    '"environment" must be an object of variable name to value.',
  ).refine((variables) => Object.keys(variables).length <= 100, '"environment" holds more than 100 variables.').optional(),
};

/** Keys only a git build uses; a directory build accepts and ignores them, as the original did. */
const GIT_ONLY = {
  branch: z.string('"branch" must be a string.').min(1).max(255).optional(),
  hash: z.string('"hash" must be a string.').regex(/^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$/, '"hash" must be 40 or 64 hex characters.').optional(),
  remote: z.string('"remote" must be a string.').min(1).max(255).optional(),
};

const gitBuildRequestSchema = z.object({
  type: z.literal('git'),
  url,
  ...GIT_ONLY,
  project_directory: projectDirectory
    .refine(isInsideRepository, '"project_directory" must be a relative folder inside the repository, without "..".')
    .optional(),
  ...COMMON,
});

const directoryBuildRequestSchema = z.object({
  type: z.literal('directory'),
  project_directory: projectDirectory.refine(isAbsolute, '"project_directory" must be an absolute path on the master.'),
  url: url.optional(),
  ...GIT_ONLY,
  ...COMMON,
});

/**
 * POST /v1/build with `type` already lower-cased (the master accepts any case). Unknown keys are checked
 * apart, against BUILD_REQUEST_KEYS, so that the answer names the key.
 */
export const buildRequestSchema = z.discriminatedUnion('type', [gitBuildRequestSchema, directoryBuildRequestSchema]);
export type BuildRequestBody = z.input<typeof buildRequestSchema>;

function isInsideRepository(folder: string): boolean {
  if (isAbsolute(folder) || folder.includes('\0')) return false;
  const normal = normalize(folder);
  return normal !== '..' && !normal.startsWith('../') && !normal.split('/').includes('.git');
}

/** PUT /v1/build/:id: the one update a build takes. */
export const CANCEL_BUILD_KEYS = ['status'] as const;
const ONLY_CANCEL = 'The only update a build accepts is {"status": "canceled"}.';
export const cancelBuildRequestSchema = z.object({
  status: z.string(ONLY_CANCEL).refine((status) => status.toLowerCase() === 'canceled', ONLY_CANCEL),
}, ONLY_CANCEL);

/** POST /v1/worker/shutdown; `slaves` is the original's word for `workers`. */
export const SHUTDOWN_WORKERS_KEYS = ['shutdown_all', 'workers', 'slaves'] as const;
const SHUTDOWN_FORMS = 'Give {"shutdown_all": true} or {"workers": [ids]} with a non-empty list of integer ids.';
const workerIds = z.array(z.number(SHUTDOWN_FORMS).int(SHUTDOWN_FORMS).min(0, SHUTDOWN_FORMS), SHUTDOWN_FORMS).min(1, SHUTDOWN_FORMS);
export const shutdownWorkersRequestSchema = z.union([
  z.object({ shutdown_all: z.literal(true) }),
  z.object({ workers: workerIds }),
  z.object({ slaves: workerIds }),
], SHUTDOWN_FORMS);
