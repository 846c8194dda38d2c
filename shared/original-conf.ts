/**
 * The original ClusterRunner's conf keys that ours does not share (issue 17): its conf files and init scripts
 * must start our services unchanged. Of its 22 keys, 10 are ours too (secret, base_directory, log_level,
 * hostname, port, num_executors, https_cert_file, https_key_file, heartbeat_interval,
 * heartbeat_failure_threshold); the 12 below are mapped onto ours, or accepted with one warning each saying
 * what we do instead. Read by loadConf (shared/conf.ts), which reports their problems with its own.
 */
import path from 'node:path';
import os from 'node:os';

type Role = 'master' | 'worker' | 'client';

export interface OriginalEntry {
  readonly key: string;
  /** null for an empty value or None. */
  readonly value: string | null;
  /** Where it came from, for messages: a file and line, or the command line. */
  readonly where: string;
  /** The file section; absent for the command line, which wins over every section. */
  readonly section?: string;
}

/** What the original's keys come to, for loadConf to merge under our own keys (ours win). */
export interface OriginalSettings {
  /** From master_hostname and master_port (either alone: the other takes the original's default). */
  readonly masterUrl: string | null;
  /** max_log_file_size, our log_max_bytes. */
  readonly logMaxBytes: number | null;
  /** log_filename: the process logs there instead of stderr. */
  readonly logFile: string | null;
  /** eventlog_filename (or --eventlog-file): the master appends its events there as JSON lines; 'STDOUT' for stdout. */
  readonly eventlogFile: string | null;
  /** One per key that has no effect here, saying what we do instead. */
  readonly warnings: readonly string[];
}

/** The keys with no effect here, and what we do instead (the warning's text after "ignored: "). */
const IGNORED_KEYS: Readonly<Record<string, string>> = {
  build_symlink_directory: 'workers run each build in its own folder under base_directory/worker; no symlinks are made',
  slaves: 'workers are started on their machines and connect to the master themselves (deploy them with your own tooling)',
  git_strict_host_key_checking: "git uses your ssh configuration as it is; set StrictHostKeyChecking in ~/.ssh/config",
  cors_allowed_origins_regex: 'the API sends no CORS headers; serve a browser client from behind the same origin or a proxy',
  get_project_from_master: 'workers clone a git project themselves and fall back to the master\'s snapshot over their connection on their own',
  default_http_timeout: 'our clients time out per request on their own; the master bounds requests with http_request_timeout_seconds',
  unresponsive_slaves_cleanup_interval: 'a worker is dead after heartbeat_failure_threshold missed heartbeats and removed then',
};

const MAPPED_KEYS = ['master_hostname', 'master_port', 'log_filename', 'max_log_file_size', 'eventlog_filename'] as const;

export const ORIGINAL_KEYS: readonly string[] = Object.freeze([...MAPPED_KEYS, ...Object.keys(IGNORED_KEYS)]);

export function isOriginalKey(key: string): boolean {
  return ORIGINAL_KEYS.includes(key);
}

/** Sections a role reads, lowest precedence first; the client also finds its master under [slave]/[worker]. */
const SECTIONS_BY_ROLE: Record<Role, readonly string[]> = {
  master: ['general', 'master'],
  worker: ['general', 'slave', 'worker'],
  client: ['general', 'slave', 'worker'],
};

function expandHome(value: string): string {
  if (value === '~') return os.homedir();
  if (value.startsWith('~/')) return path.join(os.homedir(), value.slice(2));
  return value;
}

/** Parses the original's keys for one role; problems are pushed, named as loadConf names its own. */
export function readOriginalKeys(entries: readonly OriginalEntry[], role: Role, problems: string[]): OriginalSettings {
  const order = SECTIONS_BY_ROLE[role];
  const rank = (entry: OriginalEntry): number => (entry.section === undefined ? order.length : order.indexOf(entry.section));
  const latest = new Map<string, OriginalEntry>();
  for (const entry of entries.filter((e) => rank(e) >= 0).sort((a, b) => rank(a) - rank(b))) latest.set(entry.key, entry);

  const text = (key: string): string | null => {
    const value = latest.get(key)?.value ?? null;
    const trimmed = value?.trim() ?? '';
    return trimmed === '' || trimmed.toLowerCase() === 'none' ? null : trimmed;
  };
  const problem = (key: string, expected: string): null => {
    const entry = latest.get(key)!;
    problems.push(`${entry.where}: "${key}" must be ${expected} (got ${JSON.stringify(entry.value)})`);
    return null;
  };
  const filePath = (key: string): string | null => {
    const value = text(key);
    if (value === null) return null;
    // The original's --eventlog-file took STDOUT for standard output.
    if (key === 'eventlog_filename' && value === 'STDOUT') return value;
    const expanded = expandHome(value);
    return path.isAbsolute(expanded) ? path.normalize(expanded) : problem(key, 'an absolute path (~ allowed)');
  };

  let masterUrl: string | null = null;
  const host = text('master_hostname');
  const port = text('master_port');
  if (host !== null || port !== null) {
    const isHostValid = host === null || /^[^\s/:@]+$/.test(host);
    const isPortValid = port === null || (/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535);
    if (!isHostValid) problem('master_hostname', 'a host name without spaces, "/", ":" or "@"');
    if (!isPortValid) problem('master_port', 'an integer from 1 to 65535');
    if (isHostValid && isPortValid) masterUrl = `http://${host ?? 'localhost'}:${port ?? '43000'}`;
  }

  let logMaxBytes: number | null = null;
  const size = text('max_log_file_size');
  if (size !== null) {
    if (/^\d{4,15}$/.test(size) && Number(size) >= 1024) logMaxBytes = Number(size);
    else problem('max_log_file_size', 'a number of bytes >= 1024');
  }

  const warnings: string[] = [];
  for (const [key, instead] of Object.entries(IGNORED_KEYS)) {
    const entry = latest.get(key);
    if (entry !== undefined) warnings.push(`${entry.where}: "${key}" is the original ClusterRunner's and is ignored: ${instead}.`);
  }
  const eventlogFile = filePath('eventlog_filename');
  if (eventlogFile !== null && role !== 'master') {
    warnings.push(`${latest.get('eventlog_filename')!.where}: "eventlog_filename" is ignored here: workers keep no event log; ` +
      "the master's (GET /v1/eventlog, and its own eventlog_filename) records what they do.");
  }
  return { masterUrl, logMaxBytes, logFile: filePath('log_filename'), eventlogFile: role === 'master' ? eventlogFile : null, warnings };
}
