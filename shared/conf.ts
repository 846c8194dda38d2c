/**
 * clusterrunner.conf (SPEC §8): an INI file with [general], [master] and [worker] (alias [slave]) sections.
 * Precedence: command line, then environment (`CLUSTERRUNNER_<KEY>`), then the file, then defaults. Every
 * problem is collected and reported at once, before a process opens a port, so that one edit fixes them all.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ini from 'ini';
import { z } from 'zod';
import { ClusterRunnerError, errorMessage } from './errors.ts';
import { isOriginalKey, readOriginalKeys, type OriginalEntry } from './original-conf.ts';
import { parsePools, poolSectionName, type PoolConf, type PoolEntry } from './pool-conf.ts';
import { LABEL_PATTERN, MAX_LABELS } from './protocol.ts';

export const CONF_ROLES = ['master', 'worker', 'client'] as const;
export type ConfRole = (typeof CONF_ROLES)[number];

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Conf {
  /** Absolute path of the file used. */
  readonly confFile: string;
  /** Shared by the master, its workers and clients to sign requests; at least 8 characters. */
  readonly secret: string;
  /** Absolute, `~` expanded; default ~/.clusterrunner. */
  readonly baseDirectory: string;
  /** Default info. */
  readonly logLevel: LogLevel;
  /** Default os.hostname(). */
  readonly hostname: string;
  /** Master's listening port; default 43000. */
  readonly port: number;
  /** Executors of a worker; default 1. */
  readonly numExecutors: number;
  /** http(s) URL without a trailing slash; default http://127.0.0.1:43000. */
  readonly masterUrl: string;
  /** Key heartbeat_interval (seconds); default 5 s. */
  readonly heartbeatIntervalMs: number;
  /** Missed heartbeats before a worker is dead; default 3. */
  readonly heartbeatFailureThreshold: number;
  /** Key master_unreachable_seconds; a worker exits after this long without its master; default 600 s. */
  readonly masterUnreachableMs: number;
  /** Key kill_grace_seconds; SIGTERM to SIGKILL; default 5 s. */
  readonly killGraceMs: number;
  /** Largest HTTP body accepted; default 1048576. */
  readonly maxBodyBytes: number;
  /** Key http_request_timeout_seconds; a request (headers and body) must arrive within it; default 60 s. */
  readonly httpRequestTimeoutMs: number;
  /** Key http_headers_timeout_seconds; a request's headers must arrive within it; default 20 s. */
  readonly httpHeadersTimeoutMs: number;
  /** WebSocket connection attempts accepted per second from one address; more get 429; default 20. */
  readonly maxWorkerConnectsPerSecond: number;
  /** Key http_send_timeout_seconds; a connection that neither sends nor takes a byte for this long is closed; default 60 s. */
  readonly httpSendTimeoutMs: number;
  /** Key max_connections; open connections to the master in all, past which new ones are closed at once; default 1000. */
  readonly maxConnections: number;
  /** Key max_connections_per_address; open connections from one address; default 100. */
  readonly maxConnectionsPerAddress: number;
  /** Whether GET requests need the digest too; default false. */
  readonly authenticateReads: boolean;
  /** Whether builds may use file:// and local paths as repositories; default true. */
  readonly allowLocalRepositories: boolean;
  /** Whether the original's body-only digest is accepted; default true. */
  readonly acceptLegacyDigest: boolean;
  /** Key no_worker_timeout_seconds; a build with no worker for this long errors; default 3600 s; 0 = wait for ever. */
  readonly noWorkerTimeoutMs: number;
  /** Key suspect_after_failures (SPEC §15): failures of a worker's atoms that pass on another worker, in a row, that make it suspect; default 3. */
  readonly suspectAfterFailures: number;
  /** PEM certificate for HTTPS; null = plain HTTP. */
  readonly httpsCertFile: string | null;
  /**
   * Key run_as_user (worker): a user name or uid that build commands run as when the worker runs as root, so
   * they cannot read the worker's conf (the secret) or its other files; default None (the worker's own user).
   */
  readonly runAsUser: string | null;
  /** PEM key for HTTPS; null = plain HTTP. */
  readonly httpsKeyFile: string | null;
  /** SQLite file; default <baseDirectory>/clusterrunner.db. */
  readonly database: string;
  /** Atomizer lines per build; default 200000. */
  readonly maxAtoms: number;
  /** Key atomizer_timeout_seconds; default 600 s. */
  readonly atomizerTimeoutMs: number;
  /** Default 67108864. */
  readonly maxAtomizerOutputBytes: number;
  /** Console output kept by the master per atom; default 67108864. */
  readonly maxConsoleBytes: number;
  /** Artifact bytes unpacked per atom; default 1073741824. */
  readonly maxArtifactBytes: number;
  /** Artifact files per atom; default 100000. */
  readonly maxArtifactFiles: number;
  /** Builds fetched and atomized at once; default 4. */
  readonly maxConcurrentPreparations: number;
  /** Each git command's time limit (key git_timeout_seconds, default 600). */
  readonly gitTimeoutMs: number;
  /** Largest remote_files download, in bytes (default 1 GiB). */
  readonly maxRemoteFileBytes: number;
  /** Each remote_files download's time limit (key remote_file_timeout_seconds, default 300). */
  readonly remoteFileTimeoutMs: number;
  /** Most bytes a worker unpacks from the master's snapshot of a project (default 4 GiB). */
  readonly maxSnapshotBytes: number;
  /** Key keep_builds_days; finished builds older than this are pruned, files and rows (default 30 days). */
  readonly keepBuildsMs: number;
  /** Results (console, artifacts, archives) kept in all; the oldest finished builds go first (default 20 GiB). */
  readonly maxResultsBytes: number;
  /** A log file written through stderr is rotated past this size (default 20 MiB). */
  readonly logMaxBytes: number;
  /** Rotated log files kept beside the live one (default 5). */
  readonly logKeepFiles: number;
  /** Old build workspaces and git caches a worker keeps in all, least recently used go first (default 20 GiB). */
  readonly maxWorkspaceBytes: number;
  /** Free disk space under the worker's base directory below which it reports disk pressure (default 1 GiB). */
  readonly minDiskFreeBytes: number;
  /** Key labels (worker): the labels it carries, for jobs' `requires` (SPEC §13); default none. */
  readonly labels: readonly string[];
  /** Key health_check_command (worker): a shell command whose failure makes the worker unhealthy; default null (none). */
  readonly healthCheckCommand: string | null;
  /** Key health_check_interval_seconds (worker): between runs of health_check_command; default 30 s. */
  readonly healthCheckIntervalMs: number;
  /**
   * Key command_nice (worker): how far below the worker's own CPU priority its commands run (shared/spawner.ts);
   * default 10; 0 = the same.
   */
  readonly commandNice: number;
  /** Key compatibility: 'original' answers the original ClusterRunner's clients in its vocabulary (issue 17); default 'default'. */
  readonly compatibility: 'default' | 'original';
  /** The original's log_filename: log there instead of stderr; default null (stderr). */
  readonly logFile: string | null;
  /** The original's eventlog_filename (master only): events appended there as JSON lines; default null. */
  readonly eventlogFile: string | null;
  /** Keys of the original's that have no effect here, each with what we do instead; to be logged at start. */
  readonly warnings: readonly string[];
  /** `[pool NAME]` sections (SPEC §13, shared/pool-conf.ts); read by the master only. */
  readonly pools: readonly PoolConf[];
}

/** Keyed by INI key names, e.g. `{ port: 43001 }`; undefined values are ignored, null unsets a nullable key. */
export type ConfOverrides = Partial<Record<string, string | number | boolean | null | undefined>>;

export const CONF_ERROR = 'BAD_CONF';

const SECTIONS = ['general', 'master', 'worker', 'slave'] as const;
type Section = (typeof SECTIONS)[number];

/** Later sections override earlier ones; [worker] wins over its alias [slave] when a file has both. */
const SECTIONS_BY_ROLE: Record<ConfRole, readonly Section[]> = {
  master: ['general', 'master'],
  worker: ['general', 'slave', 'worker'],
  client: ['general'],
};

const ENV_PREFIX = 'CLUSTERRUNNER_';
const REDACTED = '[redacted]';

// ---------------------------------------------------------------------------------------------------------
// The keys: each one's schema (fed a trimmed string, or null for empty/None) and what it expects, in words.

interface Setting<T> {
  readonly schema: z.ZodType<T>;
  readonly expected: string;
}

function setting<T>(schema: z.ZodType<T>, expected: string): Setting<T> {
  return { schema, expected };
}

// Plain decimals only: Number() would also take "0x10", "1e3" or " ", which nobody means in a config file.
const INTEGER_TEXT = /^[+-]?\d+$/;
const DECIMAL_TEXT = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

function integer(min: number, max = Number.MAX_SAFE_INTEGER): z.ZodType<number> {
  return z.string().regex(INTEGER_TEXT).pipe(z.coerce.number<string>().int().min(min).max(max));
}

function seconds(options: { allowZero: boolean }): z.ZodType<number> {
  const number = z.coerce.number<string>();
  return z.string().regex(DECIMAL_TEXT).pipe(options.allowZero ? number.min(0) : number.positive());
}

const boolean = z.string().pipe(
  z.stringbool({ truthy: ['true', 'yes', 'on', '1'], falsy: ['false', 'no', 'off', '0'], case: 'insensitive' }),
);

/** `~` is the user's home; a relative path would depend on where the daemon happened to start. */
const absolutePath = z
  .string()
  .transform(expandHome)
  .refine((value) => path.isAbsolute(value))
  .transform((value) => path.normalize(value));

/** The original's logbook level names still work. */
const LOG_LEVEL_ALIASES: Readonly<Record<string, LogLevel>> = { warning: 'warn', critical: 'fatal', notice: 'info' };
const logLevel = z
  .string()
  .transform((value) => value.toLowerCase())
  .transform((value) => LOG_LEVEL_ALIASES[value] ?? value)
  .pipe(z.enum(LOG_LEVELS));

/** The original accepted `host:port`; http:// is implied then. Callers append paths, so no trailing slash. */
const httpUrl = z
  .string()
  .transform((value) => (value.includes('://') ? value : `http://${value}`))
  .refine(isHttpUrl)
  .transform((value) => value.replace(/\/+$/, ''));

/** `a, b,c`: empty entries dropped, duplicates kept once; None or empty is no label. */
const labelsSetting = z
  .string()
  .nullable()
  .transform((value) => [...new Set((value ?? '').split(',').map((label) => label.trim()).filter((label) => label !== ''))])
  .pipe(z.array(z.string().regex(LABEL_PATTERN)).max(MAX_LABELS));

const SETTINGS = {
  secret: setting(z.string().min(8), 'a secret of at least 8 characters'),
  base_directory: setting(absolutePath, 'an absolute path (~ allowed)'),
  log_level: setting(logLevel, `one of ${LOG_LEVELS.join(', ')}`),
  hostname: setting(z.string().regex(/^\S+$/), 'a host name without spaces'),
  port: setting(integer(1, 65535), 'an integer from 1 to 65535'),
  num_executors: setting(integer(1), 'an integer >= 1'),
  master_url: setting(httpUrl, 'an http(s) URL such as http://host:43000'),
  heartbeat_interval: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  heartbeat_failure_threshold: setting(integer(1), 'an integer >= 1'),
  master_unreachable_seconds: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  kill_grace_seconds: setting(seconds({ allowZero: true }), 'a number of seconds >= 0'),
  max_body_bytes: setting(integer(1), 'a number of bytes >= 1'),
  http_request_timeout_seconds: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  http_headers_timeout_seconds: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  max_worker_connects_per_second: setting(integer(1), 'an integer >= 1'),
  http_send_timeout_seconds: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  max_connections: setting(integer(1), 'an integer >= 1'),
  max_connections_per_address: setting(integer(1), 'an integer >= 1'),
  authenticate_reads: setting(boolean, 'true or false'),
  allow_local_repositories: setting(boolean, 'true or false'),
  accept_legacy_digest: setting(boolean, 'true or false'),
  no_worker_timeout_seconds: setting(seconds({ allowZero: true }), 'a number of seconds >= 0 (0 = wait for ever)'),
  suspect_after_failures: setting(integer(1, 1_000_000), 'an integer >= 1'),
  https_cert_file: setting(absolutePath.nullable(), 'an absolute path (~ allowed) or None'),
  https_key_file: setting(absolutePath.nullable(), 'an absolute path (~ allowed) or None'),
  run_as_user: setting(z.string().regex(/^([a-z_][a-z0-9_.-]{0,31}|\d{1,10})$/i).nullable(), 'a user name or uid, or None'),
  // ':memory:' lets tests run a master without touching the disk.
  database: setting(z.literal(':memory:').or(absolutePath), 'an absolute path (~ allowed)'),
  max_atoms: setting(integer(1), 'an integer >= 1'),
  atomizer_timeout_seconds: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  max_atomizer_output_bytes: setting(integer(1), 'a number of bytes >= 1'),
  max_console_bytes: setting(integer(1), 'a number of bytes >= 1'),
  max_artifact_bytes: setting(integer(1), 'a number of bytes >= 1'),
  max_artifact_files: setting(integer(1), 'an integer >= 1'),
  max_concurrent_preparations: setting(integer(1), 'an integer >= 1'),
  git_timeout_seconds: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  max_remote_file_bytes: setting(integer(1), 'a number of bytes >= 1'),
  remote_file_timeout_seconds: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  max_snapshot_bytes: setting(integer(1), 'a number of bytes >= 1'),
  keep_builds_days: setting(z.string().regex(DECIMAL_TEXT).pipe(z.coerce.number<string>().positive()), 'a number of days > 0'),
  max_results_bytes: setting(integer(1), 'a number of bytes >= 1'),
  log_max_bytes: setting(integer(1024), 'a number of bytes >= 1024'),
  log_keep_files: setting(integer(1, 1000), 'an integer from 1 to 1000'),
  max_workspace_bytes: setting(integer(1), 'a number of bytes >= 1'),
  min_disk_free_bytes: setting(integer(0), 'a number of bytes >= 0 (0 = never report disk pressure)'),
  compatibility: setting(z.enum(['default', 'original']), 'default or original'),
  labels: setting(labelsSetting, `a comma-separated list of at most ${MAX_LABELS} labels (letters, digits, "_", ".", ":", "-")`),
  health_check_command: setting(z.string().max(4096).nullable(), 'a shell command, or None'),
  health_check_interval_seconds: setting(seconds({ allowZero: false }), 'a number of seconds > 0'),
  command_nice: setting(integer(0, 19), 'an integer from 0 to 19 (0 = the worker\'s own priority)'),
} as const;

export type ConfKey = keyof typeof SETTINGS;
/** Every key clusterrunner.conf accepts, in the order of the example file. */
export const CONF_KEYS: readonly ConfKey[] = Object.freeze(Object.keys(SETTINGS) as ConfKey[]);

function isConfKey(key: string): key is ConfKey {
  return Object.hasOwn(SETTINGS, key);
}

// ---------------------------------------------------------------------------------------------------------

/** ~/.clusterrunner/clusterrunner.conf, where every command looks without -c/--config-file. */
export function defaultConfPath(): string {
  return path.join(os.homedir(), '.clusterrunner', 'clusterrunner.conf');
}

/**
 * Reads the configuration of one role into a frozen Conf, or throws one ClusterRunnerError (BAD_CONF, 400)
 * that lists every problem found, each with where it came from, the key and what was expected.
 */
export function loadConf(options: {
  /** Default defaultConfPath(); `~` expanded, relative to the current folder. */
  file?: string | null;
  role: ConfRole;
  /** Values from the command line, keyed by INI key. */
  overrides?: ConfOverrides;
  /** Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Write a file with a fresh secret when there is none. */
  createIfMissing?: boolean;
}): Conf {
  const confFile = path.resolve(expandHome(options.file ?? defaultConfPath()));
  if (!fileExists(confFile)) {
    if (options.createIfMissing !== true) throw missingFile(confFile);
    createConfFile(confFile);
  }
  const text = readConfText(confFile);

  const problems: string[] = [];
  const { entries, poolEntries, problems: syntaxProblems } = scanIni(text);
  problems.push(...syntaxProblems.map((problem) => `${confFile} ${problem}`));
  const pools = parsePools(poolEntries.map((entry) => ({ ...entry, value: normalizeValue(entry.value), where: `${confFile} line ${entry.line}` })), problems);

  const fileValues: RawValue[] = [];
  // The original's own keys (shared/original-conf.ts), so that its conf files and flags keep working.
  const originalEntries: OriginalEntry[] = [];
  for (const entry of entries) {
    const where = `${confFile} line ${entry.line}`;
    if (isConfKey(entry.key)) fileValues.push({ key: entry.key, value: entry.value, where, section: entry.section });
    else if (isOriginalKey(entry.key)) originalEntries.push({ key: entry.key, value: entry.value, where, section: entry.section });
    else problems.push(`${where}: unknown key "${entry.key}" in [${entry.section}]`);
  }
  const envValues = readEnvValues(options.env ?? process.env);
  const ownOverrides: ConfOverrides = {};
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (!isOriginalKey(key)) ownOverrides[key] = value;
    else if (value !== undefined) originalEntries.push({ key, value: value === null ? null : String(value), where: 'command line' });
  }
  const overrideValues = readOverrides(ownOverrides, problems);

  // Every value is checked, even one in a section this role ignores or one overridden: a mistake is a mistake.
  const parsed = new Map<RawValue, Value>();
  for (const raw of [...fileValues, ...envValues, ...overrideValues]) {
    const result = parseValue(raw);
    if (result.isValid) parsed.set(raw, result.value);
    else problems.push(result.problem);
  }

  // Lowest precedence first, so that the last value seen for a key is the one that counts.
  const values = new Map<ConfKey, Value>();
  const offeredKeys = new Set<ConfKey>();
  for (const raw of [...selectFileValues(fileValues, options.role), ...envValues, ...overrideValues]) {
    offeredKeys.add(raw.key);
    const value = parsed.get(raw);
    if (value === undefined) values.delete(raw.key);
    else values.set(raw.key, value);
  }

  if (!offeredKeys.has('secret')) {
    problems.push(
      `${confFile}: "secret" is missing; add "secret = <at least 8 characters>" under [general] ` +
        `(or set ${ENV_PREFIX}SECRET)`,
    );
  }
  // Any line setting a secret counts, even one under a wrong section: the file still holds it.
  if (/^\s*secret\s*=/m.test(text)) {
    const modeProblem = checkSecretFileMode(confFile);
    if (modeProblem !== null) problems.push(modeProblem);
  }

  const get = <K extends ConfKey>(key: K): z.output<(typeof SETTINGS)[K]['schema']> | undefined =>
    values.get(key) as z.output<(typeof SETTINGS)[K]['schema']> | undefined;
  const httpsCertFile = get('https_cert_file') ?? null;
  const httpsKeyFile = get('https_key_file') ?? null;
  if ((httpsCertFile === null) !== (httpsKeyFile === null)) {
    problems.push(`${confFile}: "https_cert_file" and "https_key_file" must be set together (HTTPS needs both)`);
  }

  const original = readOriginalKeys(originalEntries, options.role, problems);

  if (problems.length > 0) {
    const unknownKeyHint = problems.some((problem) => problem.includes('unknown key'))
      ? `\nKnown keys: ${CONF_KEYS.join(', ')} (see clusterrunner.conf.example).`
      : '';
    throw new ClusterRunnerError(
      CONF_ERROR,
      `The configuration cannot be used (${problems.length} ${problems.length === 1 ? 'problem' : 'problems'}):\n` +
        problems.map((problem) => `- ${problem}`).join('\n') +
        unknownKeyHint,
      { status: 400 },
    );
  }

  const baseDirectory = get('base_directory') ?? path.join(os.homedir(), '.clusterrunner');
  const toMs = (secondsValue: number): number => Math.round(secondsValue * 1000);
  return Object.freeze({
    confFile,
    secret: get('secret') ?? '',
    baseDirectory,
    logLevel: get('log_level') ?? 'info',
    hostname: get('hostname') ?? os.hostname(),
    port: get('port') ?? 43000,
    numExecutors: get('num_executors') ?? 1,
    masterUrl: get('master_url') ?? original.masterUrl ?? 'http://127.0.0.1:43000',
    heartbeatIntervalMs: toMs(get('heartbeat_interval') ?? 5),
    heartbeatFailureThreshold: get('heartbeat_failure_threshold') ?? 3,
    masterUnreachableMs: toMs(get('master_unreachable_seconds') ?? 600),
    killGraceMs: toMs(get('kill_grace_seconds') ?? 5),
    maxBodyBytes: get('max_body_bytes') ?? 1048576,
    httpRequestTimeoutMs: toMs(get('http_request_timeout_seconds') ?? 60),
    httpHeadersTimeoutMs: toMs(get('http_headers_timeout_seconds') ?? 20),
    maxWorkerConnectsPerSecond: get('max_worker_connects_per_second') ?? 20,
    httpSendTimeoutMs: toMs(get('http_send_timeout_seconds') ?? 60),
    maxConnections: get('max_connections') ?? 1000,
    maxConnectionsPerAddress: get('max_connections_per_address') ?? 100,
    authenticateReads: get('authenticate_reads') ?? false,
    allowLocalRepositories: get('allow_local_repositories') ?? true,
    acceptLegacyDigest: get('accept_legacy_digest') ?? true,
    noWorkerTimeoutMs: toMs(get('no_worker_timeout_seconds') ?? 3600),
    suspectAfterFailures: get('suspect_after_failures') ?? 3,
    httpsCertFile,
    runAsUser: get('run_as_user') ?? null,
    httpsKeyFile,
    database: get('database') ?? path.join(baseDirectory, 'clusterrunner.db'),
    maxAtoms: get('max_atoms') ?? 200000,
    atomizerTimeoutMs: toMs(get('atomizer_timeout_seconds') ?? 600),
    maxAtomizerOutputBytes: get('max_atomizer_output_bytes') ?? 67108864,
    maxConsoleBytes: get('max_console_bytes') ?? 67108864,
    maxArtifactBytes: get('max_artifact_bytes') ?? 1073741824,
    maxArtifactFiles: get('max_artifact_files') ?? 100000,
    maxConcurrentPreparations: get('max_concurrent_preparations') ?? 4,
    gitTimeoutMs: toMs(get('git_timeout_seconds') ?? 600),
    maxRemoteFileBytes: get('max_remote_file_bytes') ?? 1073741824,
    remoteFileTimeoutMs: toMs(get('remote_file_timeout_seconds') ?? 300),
    maxSnapshotBytes: get('max_snapshot_bytes') ?? 4294967296,
    keepBuildsMs: Math.round((get('keep_builds_days') ?? 30) * 86_400_000),
    maxResultsBytes: get('max_results_bytes') ?? 21474836480,
    logMaxBytes: get('log_max_bytes') ?? original.logMaxBytes ?? 20971520,
    logKeepFiles: get('log_keep_files') ?? 5,
    maxWorkspaceBytes: get('max_workspace_bytes') ?? 21474836480,
    minDiskFreeBytes: get('min_disk_free_bytes') ?? 1073741824,
    compatibility: get('compatibility') ?? 'default',
    labels: Object.freeze(get('labels') ?? []),
    healthCheckCommand: get('health_check_command') ?? null,
    healthCheckIntervalMs: toMs(get('health_check_interval_seconds') ?? 30),
    commandNice: get('command_nice') ?? 10,
    logFile: original.logFile,
    eventlogFile: original.eventlogFile,
    warnings: Object.freeze([...original.warnings]),
    pools,
  });
}

/**
 * The environment for a build's commands (atomizers, setup, atoms, teardown): ours minus the settings given
 * as CLUSTERRUNNER_<KEY>, above all the secret, which any command could otherwise print into its output.
 */
export function commandEnvironment(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(SETTINGS)) delete env[`${ENV_PREFIX}${key.toUpperCase()}`];
  return Object.assign(env, extra);
}

/** The configuration as log fields, with the secret replaced by '[redacted]'. */
export function redactConf(conf: Conf): Record<string, unknown> {
  return { ...conf, secret: REDACTED };
}

// ---------------------------------------------------------------------------------------------------------
// Values

type Value = string | number | boolean | null;

interface RawValue {
  readonly key: ConfKey;
  /** null for an empty value or None. */
  readonly value: string | null;
  /** Where it came from, for messages: a file and line, an environment variable or the command line. */
  readonly where: string;
  /** The file section it was read from; absent for the environment and the command line. */
  readonly section?: Section;
}

/** The file's values this role reads, lowest precedence first (SECTIONS_BY_ROLE). */
function selectFileValues(fileValues: readonly RawValue[], role: ConfRole): RawValue[] {
  const order = SECTIONS_BY_ROLE[role];
  const rank = (raw: RawValue): number => order.indexOf(raw.section ?? 'general');
  const selected = fileValues.filter((raw) => rank(raw) >= 0).sort((a, b) => rank(a) - rank(b));
  if (role === 'client' && !selected.some((raw) => raw.key === 'master_url')) {
    // A client reads [general] only, but it still needs to know where the master is.
    const workerOrder = SECTIONS_BY_ROLE.worker;
    const workerRank = (raw: RawValue): number => workerOrder.indexOf(raw.section ?? 'general');
    selected.push(
      ...fileValues
        .filter((raw) => raw.key === 'master_url' && (raw.section === 'worker' || raw.section === 'slave'))
        .sort((a, b) => workerRank(a) - workerRank(b)),
    );
  }
  return selected;
}

function readEnvValues(env: NodeJS.ProcessEnv): RawValue[] {
  const values: RawValue[] = [];
  for (const key of CONF_KEYS) {
    const name = `${ENV_PREFIX}${key.toUpperCase()}`;
    const value = env[name];
    // An empty variable is how shells and compose files say "not set".
    if (value !== undefined && value !== '') values.push({ key, value, where: `environment variable ${name}` });
  }
  return values;
}

function readOverrides(overrides: ConfOverrides, problems: string[]): RawValue[] {
  const values: RawValue[] = [];
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    if (isConfKey(key)) values.push({ key, value: value === null ? null : String(value), where: 'command line' });
    else problems.push(`command line: unknown key "${key}"`);
  }
  return values;
}

type ParseResult =
  | { readonly isValid: true; readonly value: Value }
  | { readonly isValid: false; readonly problem: string };

/** The parsed value, or a problem naming where, the key and what was expected. */
function parseValue(raw: RawValue): ParseResult {
  const key = raw.key;
  const normalized = normalizeValue(raw.value);
  const spec = SETTINGS[key];
  const result = spec.schema.safeParse(normalized);
  if (result.success) return { isValid: true, value: result.data as Value };
  // Never echo the secret, not even a wrong one: the message goes to logs and terminals.
  const got = key === 'secret' ? '' : normalized === null ? ' (it is empty)' : ` (got ${JSON.stringify(normalized)})`;
  return { isValid: false, problem: `${raw.where}: "${key}" must be ${spec.expected}${got}` };
}

/** The original wrote Python's None for "no value"; an empty value means the same. */
function normalizeValue(value: string | null): string | null {
  if (value === null) return null;
  const trimmed = value.trim();
  return trimmed === '' || trimmed.toLowerCase() === 'none' ? null : trimmed;
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

function expandHome(value: string): string {
  if (value === '~') return os.homedir();
  if (value.startsWith('~/')) return path.join(os.homedir(), value.slice(2));
  return value;
}

// ---------------------------------------------------------------------------------------------------------
// Reading the INI text

interface IniEntry {
  readonly section: Section;
  readonly key: string;
  readonly value: string | null;
  readonly line: number;
}

/** ini's own line grammar (lib/ini.js): a `[section]` header alone on its line, or `key = value`. */
const INI_LINE = /^\[([^\]]*)\]\s*$|^([^=]+)(=(.*))?$/;

/**
 * Reads entries with their line numbers. ini.decode cannot give lines (it even splits on runs of newlines,
 * so blank lines vanish from any count), so this follows its grammar line by line and uses ini.unsafe for
 * quoting, escapes and inline `;`/`#` comments, so that values read exactly as ini would read them.
 */
function scanIni(text: string): { entries: IniEntry[]; poolEntries: (Omit<PoolEntry, 'where'> & { line: number })[]; problems: string[] } {
  const entries: IniEntry[] = [];
  const poolEntries: (Omit<PoolEntry, 'where'> & { line: number })[] = [];
  let pool: string | null = null;
  const problems: string[] = [];
  const seen = new Map<string, number>();
  let section: Section | null = null;
  let isKnownSection = true;

  text.split(/\r\n|\r|\n/).forEach((lineText, index) => {
    const line = index + 1;
    if (/^\s*([;#]|$)/.test(lineText)) return;
    const match = INI_LINE.exec(lineText.trim());
    const [, sectionName, rawKey, hasValue, rawValue] = match ?? [];
    if (sectionName !== undefined) {
      const name = ini.unsafe(sectionName);
      pool = poolSectionName(name);
      isKnownSection = pool !== null || (SECTIONS as readonly string[]).includes(name);
      section = isKnownSection && pool === null ? (name as Section) : null;
      if (!isKnownSection) {
        problems.push(`line ${line}: unknown section [${name}]; expected [general], [master], [worker], [slave] or [pool NAME]`);
      }
      return;
    }
    if (rawKey === undefined || hasValue === undefined || rawKey.trim().startsWith('[')) {
      problems.push(`line ${line}: expected "[section]" or "key = value", got ${JSON.stringify(lineText.trim())}`);
      return;
    }
    // Keys under an unknown section were reported with the section already.
    if (!isKnownSection) return;
    const key = ini.unsafe(rawKey);
    if (pool !== null) {
      const poolKey = `pool ${pool}\u0000${key}`;
      const firstPoolLine = seen.get(poolKey);
      if (firstPoolLine === undefined) poolEntries.push({ pool, key, value: String(ini.unsafe(rawValue ?? '')), line });
      else problems.push(`line ${line}: key "${key}" is set twice in [pool ${pool}] (first on line ${firstPoolLine})`);
      seen.set(poolKey, firstPoolLine ?? line);
      return;
    }
    if (section === null) {
      problems.push(`line ${line}: key "${key}" is outside any section; put it under [general], [master] or [worker]`);
      return;
    }
    const seenKey = `${section}\u0000${key}`;
    const firstLine = seen.get(seenKey);
    if (firstLine !== undefined) {
      problems.push(`line ${line}: key "${key}" is set twice in [${section}] (first on line ${firstLine})`);
      return;
    }
    seen.set(seenKey, line);
    // ini.unsafe may hand back a number or boolean for a quoted JSON value; every key reads a string.
    const value: unknown = ini.unsafe(rawValue ?? '');
    entries.push({ section, key, value: value === null ? null : String(value), line });
  });
  return { entries, poolEntries, problems };
}

// ---------------------------------------------------------------------------------------------------------
// The file on disk

function fileExists(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw badConf(`Cannot read the configuration file ${file}: ${errorMessage(error)}`, error);
  }
}

function readConfText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw badConf(`Cannot read the configuration file ${file}: ${errorMessage(error)}`, error);
  }
}

/** A fresh secret, written with mode 0600 from the start so that it is never readable by others. */
function createConfFile(file: string): void {
  try {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const secret = randomBytes(32).toString('hex');
    // 'wx': if another process created the file meanwhile, keep its secret rather than overwrite it.
    // New confs refuse the original's body-only digest, which can be replayed (README "Security"); confs
    // written before keep what they say.
    const text = `[general]\nsecret = ${secret}\naccept_legacy_digest = false\n`;
    writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw badConf(`Cannot create the configuration file ${file}: ${errorMessage(error)}`, error);
  }
}

function checkSecretFileMode(file: string): string | null {
  // Windows has no POSIX modes; Node reports 0666 or 0444 there whatever the ACLs say.
  if (process.platform === 'win32') return null;
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) === 0) return null;
  const octal = mode.toString(8).padStart(4, '0');
  return `${file} holds the secret but other users can read it (mode ${octal}). Fix it with: chmod 600 ${file}`;
}

function missingFile(file: string): ClusterRunnerError {
  return badConf(
    `No configuration file at ${file}. Create one holding the shared secret, for example:\n` +
      `  mkdir -p ${path.dirname(file)} && (umask 077 && ` +
      `printf '[general]\\nsecret = %s\\n' "$(openssl rand -hex 32)" > ${file})\n` +
      'or pass another file with -c/--config-file. clusterrunner.conf.example lists every key.',
  );
}

function badConf(message: string, cause?: unknown): ClusterRunnerError {
  return new ClusterRunnerError(CONF_ERROR, message, { status: 400, cause });
}
