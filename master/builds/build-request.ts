import { normalize } from 'node:path';
import { badRequest } from '../../shared/errors.ts';
import { BUILD_REQUEST_KEYS, REQUIRED_BUILD_KEYS, buildRequestSchema } from '../../shared/api/requests.ts';

/** A validated `POST /v1/build` body (SPEC §3); its schema is shared/api/requests.ts's, which the CLI shares. */
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
  /** Variables for every atom, setup and teardown; {} when none. */
  readonly environment: Readonly<Record<string, string>>;
}

/** Turns an untrusted JSON body into a BuildRequest, or throws a 400 that names the field. */
export function parseBuildRequest(body: unknown): BuildRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest('The build request must be a JSON object.');
  }
  const raw = body as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!(BUILD_REQUEST_KEYS as readonly string[]).includes(key)) {
      throw badRequest(`Unknown build parameter "${key}". Known parameters: ${BUILD_REQUEST_KEYS.join(', ')}.`);
    }
  }
  // SPEC §3's own messages for the type and the required keys come first, before any field's.
  const type = typeof raw['type'] === 'string' ? raw['type'].toLowerCase() : null;
  if (type !== 'git' && type !== 'directory') throw badRequest('Invalid build request type.');
  const required = REQUIRED_BUILD_KEYS[type];
  if (required.some((key) => raw[key] === undefined || raw[key] === null)) {
    throw badRequest(`Missing required parameter. Required parameters: [${required.join(', ')}]`);
  }
  const parsed = buildRequestSchema.safeParse({ ...raw, type });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw badRequest(issue.message.startsWith('"') ? issue.message : `"${issue.path.join('.')}": ${issue.message}`);
  }
  const fields = parsed.data;
  const git = fields.type === 'git' ? fields : null;
  return {
    type: fields.type,
    url: fields.url ?? null,
    branch: fields.branch ?? 'master',
    hash: fields.hash?.toLowerCase() ?? null,
    remote: fields.remote ?? 'origin',
    projectDirectory: git !== null && git.project_directory !== undefined
      ? normalize(git.project_directory).replace(/\/+$/, '')
      : fields.project_directory ?? null,
    jobName: fields.job_name ?? null,
    config: fields.config ?? null,
    remoteFiles: fields.remote_files ?? {},
    atomsOverride: fields.atoms_override ?? null,
    priority: fields.priority ?? 0,
    environment: fields.environment ?? {},
  };
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
  if (typeof copy['environment'] === 'object' && copy['environment'] !== null) {
    copy['environment'] = Object.fromEntries(Object.entries(copy['environment']).map(([k, v]) => [k, isSecretName(k) ? MASKED_VALUE : v]));
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

const MASKED_VALUE = '********';
/** Variable names CI systems treat as secrets: their values are never shown (build listings are open to read). */
const SECRET_NAME = /SECRET|TOKEN|PASSWORD|PASSWD|PASS|PWD|KEY|CREDENTIAL|AUTH|PRIVATE|SIGNATURE|COOKIE|SESSION/i;

export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}
