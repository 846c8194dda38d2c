import { z } from 'zod';
import { isAbsolute, normalize } from 'node:path';
import { badRequest } from '../../shared/errors.ts';

/** A validated `POST /v1/build` body (SPEC §3). */
export interface BuildRequest {
  readonly type: 'git' | 'directory';
  readonly url: string | null;
  readonly branch: string;
  readonly hash: string | null;
  readonly remote: string;
  readonly projectDirectory: string | null;
  readonly jobName: string | null;
  readonly config: Readonly<Record<string, unknown>> | null;
  readonly remoteFiles: Readonly<Record<string, string>>;
  readonly atomsOverride: readonly string[] | null;
  readonly priority: number;
}

const KNOWN_KEYS = [
  'type', 'url', 'branch', 'hash', 'remote', 'project_directory', 'job_name', 'config', 'remote_files',
  'atoms_override', 'priority',
] as const;

const REQUIRED: Record<BuildRequest['type'], readonly string[]> = {
  git: ['url'],
  directory: ['project_directory'],
};

const FIELDS = z.object({
  url: z.string('"url" must be a string.').min(1, '"url" must not be empty.').max(4096).optional(),
  branch: z.string('"branch" must be a string.').min(1).max(255).optional(),
  hash: z.string('"hash" must be a string.').regex(/^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$/, '"hash" must be 40 or 64 hex characters.').optional(),
  remote: z.string('"remote" must be a string.').min(1).max(255).optional(),
  project_directory: z.string('"project_directory" must be a string.').min(1, '"project_directory" must not be empty.').max(4096).optional(),
  job_name: z.string('"job_name" must be a string.').min(1, '"job_name" must not be empty.').max(255).optional(),
  config: z.record(z.string(), z.unknown(), '"config" must be an object holding a job definition.').optional(),
  remote_files: z.record(
    z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/, 'remote_files names must be plain file names (letters, digits, . _ -).'),
    z.string().regex(/^https?:\/\/\S+$/i, 'remote_files values must be http(s) URLs.').max(4096),
    '"remote_files" must be an object of file name to URL.',
  ).optional(),
  atoms_override: z.array(z.string('"atoms_override" entries must be strings.').max(1024 * 1024), '"atoms_override" must be a list of atom strings.').max(1_000_000).optional(),
  priority: z.number('"priority" must be an integer.').int('"priority" must be an integer.').min(-1_000_000).max(1_000_000).optional(),
});

/** Turns an untrusted JSON body into a BuildRequest, or throws a 400 that names the field. */
export function parseBuildRequest(body: unknown): BuildRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest('The build request must be a JSON object.');
  }
  const raw = body as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!(KNOWN_KEYS as readonly string[]).includes(key)) {
      throw badRequest(`Unknown build parameter "${key}". Known parameters: ${KNOWN_KEYS.join(', ')}.`);
    }
  }
  const type = typeof raw['type'] === 'string' ? raw['type'].toLowerCase() : null;
  if (type !== 'git' && type !== 'directory') throw badRequest('Invalid build request type.');
  const required = REQUIRED[type];
  if (required.some((key) => raw[key] === undefined || raw[key] === null)) {
    throw badRequest(`Missing required parameter. Required parameters: [${required.join(', ')}]`);
  }
  const parsed = FIELDS.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw badRequest(issue.message.startsWith('"') ? issue.message : `"${issue.path.join('.')}": ${issue.message}`);
  }
  const fields = parsed.data;
  if (type === 'directory' && !isAbsolute(fields.project_directory!)) {
    throw badRequest('"project_directory" must be an absolute path on the master.');
  }
  if (type === 'git' && fields.project_directory !== undefined && !isInsideRepository(fields.project_directory)) {
    throw badRequest('"project_directory" must be a relative folder inside the repository, without "..".');
  }
  return {
    type,
    url: fields.url ?? null,
    branch: fields.branch ?? 'master',
    hash: fields.hash?.toLowerCase() ?? null,
    remote: fields.remote ?? 'origin',
    projectDirectory: type === 'git' && fields.project_directory !== undefined
      ? normalize(fields.project_directory).replace(/\/+$/, '')
      : fields.project_directory ?? null,
    jobName: fields.job_name ?? null,
    config: fields.config ?? null,
    remoteFiles: fields.remote_files ?? {},
    atomsOverride: fields.atoms_override ?? null,
    priority: fields.priority ?? 0,
  };
}

function isInsideRepository(folder: string): boolean {
  if (isAbsolute(folder) || folder.includes('\0')) return false;
  const normal = normalize(folder);
  return normal !== '..' && !normal.startsWith('../') && !normal.split('/').includes('.git');
}

/**
 * The request as the API shows it back: as posted, but credentials in URLs are masked, since build
 * listings are readable without authentication.
 */
export function redactRequestParams(body: Record<string, unknown>): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...body };
  const mask = (value: unknown) => (typeof value === 'string' ? maskUrlCredentials(value) : value);
  if ('url' in copy) copy['url'] = mask(copy['url']);
  if (typeof copy['remote_files'] === 'object' && copy['remote_files'] !== null) {
    copy['remote_files'] = Object.fromEntries(Object.entries(copy['remote_files']).map(([k, v]) => [k, mask(v)]));
  }
  return copy;
}

function maskUrlCredentials(value: string): string {
  try {
    const url = new URL(value);
    if (url.password === '' && url.username === '') return value;
    if (url.password !== '') url.password = '***';
    else url.username = '***';
    return url.toString();
  } catch {
    return value;
  }
}
