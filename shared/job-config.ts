/**
 * The job file, `clusterrunner.yaml` (SPEC §4): a YAML map of job name ⇒ job. Parsed once, here, into a
 * frozen JobConfig; every problem is reported with the job, the key and what was expected, because the
 * message ends up in a build's `error_message` and is all the user gets to fix their file.
 */
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { ClusterRunnerError, errorMessage } from './errors.ts';
import { LABEL_PATTERN, MAX_LABELS } from './protocol.ts';

export interface JobConfig {
  readonly name: string;
  readonly commands: readonly string[];
  /** In order; each atomizer is one variable name and the shell command whose stdout lines become atoms. */
  readonly atomizers: readonly { readonly variable: string; readonly command: string }[];
  /** Run once per worker per build before its first subjob there; [] when absent. */
  readonly setupBuild: readonly string[];
  /** Run once per worker per build after its last subjob there; [] when absent. */
  readonly teardownBuild: readonly string[];
  /** Executors this build may use over all workers; null = no limit. */
  readonly maxExecutors: number | null;
  /** Executors this build may use on one worker; null = no limit. */
  readonly maxExecutorsPerWorker: number | null;
  /** Seconds an atom may run before it is killed; null = no limit. */
  readonly atomTimeoutS: number | null;
  /** Times a failed atom is run again; default 0. */
  readonly retries: number;
  /**
   * Key allow_no_atoms: false makes a build whose atomizers print no atom an ERROR. Absent when the file
   * leaves the default (true), so that job configs stored before the key existed read the same.
   */
  readonly allowNoAtoms?: false;
  /**
   * Key junit (SPEC §15): globs relative to PROJECT_DIR naming the JUnit XML files an atom writes there;
   * the worker sends those an atom wrote with its artifacts. Absent when the file has none.
   */
  readonly junit?: readonly string[];
  /**
   * Key requires (SPEC §13): labels a worker must carry, every one, to run this job's work. Absent when the
   * file names none (any worker will do).
   */
  readonly requires?: readonly string[];
}

/** Env var names the product sets itself; an atomizer may not use them. */
export const RESERVED_VARIABLES: readonly string[] = Object.freeze([
  'PROJECT_DIR',
  'ARTIFACT_DIR',
  'ATOM_ID',
  'MACHINE_EXECUTOR_INDEX',
  'EXECUTOR_INDEX',
  'BUILD_EXECUTOR_INDEX',
  'PATH',
  'HOME',
]);

/** Every name under this prefix is kept for the product's own settings (see conf.ts). */
const RESERVED_PREFIX = 'CLUSTERRUNNER_';

export function isReservedVariable(name: string): boolean {
  return RESERVED_VARIABLES.includes(name) || name.startsWith(RESERVED_PREFIX);
}

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Error codes, stable for clients: the file as a whole, the choice of job, or one job's keys. */
export const JOB_FILE_ERROR = 'BAD_JOB_FILE';
export const JOB_NAME_REQUIRED_ERROR = 'JOB_NAME_REQUIRED';
export const UNKNOWN_JOB_ERROR = 'UNKNOWN_JOB';
export const JOB_CONFIG_ERROR = 'BAD_JOB_CONFIG';

/** A job file is small; anything bigger is a mistake or an attack on the master's memory. */
export const MAX_JOB_FILE_BYTES = 1024 * 1024;
/** Aliases are fine for sharing a command list; many of them is a "billion laughs" expansion. */
const MAX_ALIAS_COUNT = 100;

const JOB_FILE_NAME = 'clusterrunner.yaml';

const KNOWN_KEYS = [
  'commands',
  'atomizers',
  'setup_build',
  'teardown_build',
  'max_executors',
  'max_executors_per_worker',
  'max_executors_per_slave',
  'atom_timeout',
  'retries',
  'allow_no_atoms',
  'junit',
  'requires',
] as const;
type JobKey = (typeof KNOWN_KEYS)[number];

/** Parses the text of clusterrunner.yaml and picks one job (SPEC §4 job_name rules). */
export function parseJobFile(yamlText: string, jobName: string | null): JobConfig {
  const jobs = readJobMap(yamlText);
  const names = [...jobs.keys()];
  if (jobName === null) {
    const [onlyName] = names;
    if (names.length === 1 && onlyName !== undefined) {
      return parseJobDefinition(onlyName, jobs.get(onlyName));
    }
    throw new ClusterRunnerError(
      JOB_NAME_REQUIRED_ERROR,
      'Multiple jobs are defined in this project but you did not specify one. ' +
        `Specify one of the following job names: ${names.join(', ')}`,
      { status: 400 },
    );
  }
  if (!jobs.has(jobName)) {
    throw new ClusterRunnerError(
      UNKNOWN_JOB_ERROR,
      `Job "${jobName}" is not defined in ${JOB_FILE_NAME}. Defined jobs: ${names.join(', ')}`,
      { status: 400 },
    );
  }
  return parseJobDefinition(jobName, jobs.get(jobName));
}

/** The job names of clusterrunner.yaml, in file order; the file's problems throw as parseJobFile's do. */
export function listJobNames(yamlText: string): string[] {
  return [...readJobMap(yamlText).keys()];
}

/** Validates an inline job definition posted as `config` (an object with the §4 keys). */
export function parseJobDefinition(name: string, raw: unknown): JobConfig {
  const job = `Job "${name}"`;
  if (!isPlainMap(raw)) {
    throw badJob(`${job} must be a map of keys (${KNOWN_KEYS.join(', ')}), ${describeValue(raw)}.`);
  }

  const problems: string[] = [];
  for (const key of Object.keys(raw)) {
    if (!(KNOWN_KEYS as readonly string[]).includes(key)) {
      problems.push(`${job}: unknown key "${key}". Known keys: ${KNOWN_KEYS.join(', ')}.`);
    }
  }
  if (raw['max_executors_per_worker'] != null && raw['max_executors_per_slave'] != null) {
    problems.push(`${job}: set "max_executors_per_worker" or its alias "max_executors_per_slave", not both.`);
  }

  const read = <T>(key: JobKey, rule: KeyRule<T>, fallback: T): T => {
    const value = raw[key];
    // An optional key left empty in YAML (`setup_build:` with its entries commented out) reads as null.
    if (value === undefined || (value === null && !rule.isRequired)) {
      if (rule.isRequired) problems.push(`${job}: "${key}" must be ${rule.expected} (it is missing).`);
      return fallback;
    }
    const result = rule.schema.safeParse(value);
    if (result.success) return result.data;
    problems.push(`${job}: "${key}" must be ${rule.expected} (${describeProblem(value)}).`);
    return fallback;
  };

  const commands = read('commands', COMMANDS_RULE, []);
  const atomizers = readAtomizers(job, raw['atomizers'], problems);
  const setupBuild = read('setup_build', COMMAND_LIST_RULE, []);
  const teardownBuild = read('teardown_build', COMMAND_LIST_RULE, []);
  const maxExecutors = read('max_executors', POSITIVE_INT_RULE, null);
  const perWorkerKey = raw['max_executors_per_slave'] != null ? 'max_executors_per_slave' : 'max_executors_per_worker';
  const maxExecutorsPerWorker = read(perWorkerKey, POSITIVE_INT_RULE, null);
  const atomTimeoutS = read('atom_timeout', SECONDS_RULE, null);
  const retries = read('retries', RETRIES_RULE, 0);
  const allowNoAtoms = read<boolean>('allow_no_atoms', BOOLEAN_RULE, true);
  const junit = read('junit', JUNIT_RULE, []);
  const requires = read('requires', REQUIRES_RULE, []);

  if (problems.length > 0) throw badJob(problems.join('\n'));
  return Object.freeze({
    name,
    commands: Object.freeze([...commands]),
    atomizers: Object.freeze(atomizers.map((atomizer) => Object.freeze(atomizer))),
    setupBuild: Object.freeze([...setupBuild]),
    teardownBuild: Object.freeze([...teardownBuild]),
    maxExecutors,
    maxExecutorsPerWorker,
    atomTimeoutS,
    retries,
    ...(allowNoAtoms ? {} : { allowNoAtoms: false as const }),
    ...(junit.length === 0 ? {} : { junit: Object.freeze([...junit]) }),
    ...(requires.length === 0 ? {} : { requires: Object.freeze([...new Set(requires)]) }),
  });
}

/**
 * Joins a command list into one shell string (SPEC §4): ` && ` between entries so that a failing command
 * stops the rest, but a plain space after an entry that already ends in an operator (`&` background,
 * `&&`, `|`, `||`), where another `&&` would be a shell syntax error.
 */
export function joinCommands(commands: readonly string[]): string {
  let joined = '';
  for (const command of commands) {
    const entry = stripTrailingSemicolons(command.trim());
    if (entry === '') continue;
    if (joined === '') joined = entry;
    else joined += (endsWithOperator(joined) ? ' ' : ' && ') + entry;
  }
  return joined;
}

/** The atom's display string and timing key: `export VAR="value";` (display only, never executed). */
export function atomCommandString(variable: string, value: string): string {
  return `export ${variable}="${value}";`;
}

interface KeyRule<T> {
  readonly schema: z.ZodType<T>;
  readonly expected: string;
  readonly isRequired?: boolean;
}

const COMMANDS_RULE: KeyRule<string[]> = {
  schema: z
    .array(z.string())
    .min(1)
    .refine((commands) => joinCommands(commands) !== ''),
  expected: 'a non-empty list of strings',
  isRequired: true,
};
const COMMAND_LIST_RULE: KeyRule<string[]> = { schema: z.array(z.string()), expected: 'a list of strings' };
const POSITIVE_INT_RULE: KeyRule<number | null> = {
  schema: z.number().int().min(1),
  expected: 'a positive integer',
};
const SECONDS_RULE: KeyRule<number | null> = {
  schema: z.number().positive(),
  expected: 'a positive number of seconds',
};
const RETRIES_RULE: KeyRule<number> = { schema: z.number().int().min(0), expected: 'an integer >= 0' };
const BOOLEAN_RULE: KeyRule<boolean> = { schema: z.boolean(), expected: 'true or false' };
/** At most this many junit globs, each this long: the worker matches every one after every atom. */
export const MAX_JUNIT_GLOBS = 32;
const MAX_JUNIT_GLOB_CHARS = 1024;
const JUNIT_RULE: KeyRule<string[]> = {
  // Relative and inside the project: the worker reads only under PROJECT_DIR.
  schema: z.array(z.string().min(1).max(MAX_JUNIT_GLOB_CHARS)
    .refine((glob) => !glob.startsWith('/') && !glob.split('/').includes('..') && !glob.includes('\u0000'))).max(MAX_JUNIT_GLOBS),
  expected: `a list of at most ${MAX_JUNIT_GLOBS} globs relative to PROJECT_DIR (no leading "/", no "..")`,
};

const REQUIRES_RULE: KeyRule<string[]> = {
  schema: z.array(z.string().regex(LABEL_PATTERN)).max(MAX_LABELS),
  expected: `a list of at most ${MAX_LABELS} worker labels (letters, digits, "_", ".", ":", "-"; at most 64 characters)`,
};

const ATOMIZERS_EXPECTED = 'a non-empty list of maps {VARIABLE: command}';

/** A map may hold several `VAR: command` entries; like the original, each is an atomizer, in order. */
function readAtomizers(job: string, value: unknown, problems: string[]): { variable: string; command: string }[] {
  if (value === undefined || value === null) {
    problems.push(`${job}: "atomizers" must be ${ATOMIZERS_EXPECTED} (it is missing).`);
    return [];
  }
  if (!Array.isArray(value) || value.length === 0) {
    problems.push(`${job}: "atomizers" must be ${ATOMIZERS_EXPECTED} (${describeValue(value)}).`);
    return [];
  }
  const atomizers: { variable: string; command: string }[] = [];
  value.forEach((entry: unknown, index) => {
    const where = `${job}: "atomizers" entry ${index + 1}`;
    if (!isPlainMap(entry) || Object.keys(entry).length === 0) {
      problems.push(`${where} must be a map {VARIABLE: command} (${describeValue(entry)}).`);
      return;
    }
    for (const [variable, command] of Object.entries(entry)) {
      if (!VARIABLE_NAME.test(variable)) {
        problems.push(
          `${where}: variable "${variable}" must be letters, digits and underscores, not starting with a digit.`,
        );
      } else if (isReservedVariable(variable)) {
        problems.push(
          `${where}: variable "${variable}" is reserved; choose another name ` +
            `(reserved: ${RESERVED_VARIABLES.join(', ')} and any name starting with ${RESERVED_PREFIX}).`,
        );
      } else if (typeof command !== 'string' || command.trim() === '') {
        problems.push(`${where}: the command of "${variable}" must be a non-empty string (${describeValue(command)}).`);
      } else {
        atomizers.push({ variable, command });
      }
    }
  });
  return atomizers;
}

/** Reads the YAML text into job name ⇒ raw job, in file order. */
function readJobMap(yamlText: string): Map<string, unknown> {
  if (Buffer.byteLength(yamlText, 'utf8') > MAX_JOB_FILE_BYTES) {
    throw badFile(`${JOB_FILE_NAME} is larger than ${MAX_JOB_FILE_BYTES} bytes; refusing to read it.`);
  }
  // merge: true keeps `<<: *defaults` working, as it did with the original's PyYAML.
  const document = parseDocument(yamlText, { uniqueKeys: true, merge: true, prettyErrors: true });
  const [firstError] = document.errors;
  if (firstError !== undefined) {
    throw badFile(`${JOB_FILE_NAME} is not valid YAML: ${firstError.message}`);
  }
  let content: unknown;
  try {
    // mapAsMap keeps the job names in file order (a plain object would move integer-like names first).
    content = document.toJS({ mapAsMap: true, maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    throw badFile(`${JOB_FILE_NAME} cannot be read: ${errorMessage(error)}`);
  }
  if (content === null || content === undefined || (content instanceof Map && content.size === 0)) {
    throw badFile(`${JOB_FILE_NAME} is empty; it must be a map of job name to job (keys: commands, atomizers, …).`);
  }
  if (!(content instanceof Map)) {
    throw badFile(`${JOB_FILE_NAME} must be a map of job name to job, ${describeValue(content)}.`);
  }
  const jobs = new Map<string, unknown>();
  for (const [name, job] of content) jobs.set(String(name), toPlain(job));
  return jobs;
}

/** Turns yaml's Maps into null-prototype objects so that the YAML and the JSON paths validate alike. */
function toPlain(value: unknown): unknown {
  if (value instanceof Map) {
    const object: Record<string, unknown> = Object.create(null);
    for (const [key, entry] of value) object[String(key)] = toPlain(entry);
    return object;
  }
  if (Array.isArray(value)) return value.map(toPlain);
  return value;
}

function isPlainMap(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Map);
}

function stripTrailingSemicolons(entry: string): string {
  let result = entry;
  // `find . -exec rm {} \;` ends in an escaped `;` that belongs to the command; only a bare one is a separator.
  while (result.endsWith(';') && countTrailingBackslashes(result.slice(0, -1)) % 2 === 0) {
    result = result.slice(0, -1).trimEnd();
  }
  return result;
}

function countTrailingBackslashes(text: string): number {
  let count = 0;
  while (count < text.length && text[text.length - 1 - count] === '\\') count += 1;
  return count;
}

function endsWithOperator(command: string): boolean {
  return command.endsWith('&') || command.endsWith('|');
}

/** Names the offending list entry: a YAML `- echo a: b` silently becomes a map, a common surprise. */
function describeProblem(value: unknown): string {
  if (Array.isArray(value)) {
    const index = value.findIndex((entry) => typeof entry !== 'string');
    if (index >= 0) {
      const entry: unknown = value[index];
      const hint = isPlainMap(entry) ? '; quote a command that contains ": "' : '';
      return `entry ${index + 1} ${describeValue(entry).replace(/^got /, 'is ')}${hint}`;
    }
    if (value.length === 0) return 'got an empty list';
    return 'got only empty commands';
  }
  return describeValue(value);
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'got nothing';
  if (Array.isArray(value)) return value.length === 0 ? 'got an empty list' : 'got a list';
  if (isPlainMap(value)) return 'got a map';
  if (typeof value === 'string') return `got the string ${JSON.stringify(truncate(value))}`;
  if (typeof value === 'number' || typeof value === 'boolean') return `got ${String(value)}`;
  return `got a ${typeof value}`;
}

function truncate(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function badFile(message: string): ClusterRunnerError {
  return new ClusterRunnerError(JOB_FILE_ERROR, message, { status: 400 });
}

function badJob(message: string): ClusterRunnerError {
  return new ClusterRunnerError(JOB_CONFIG_ERROR, message, { status: 400 });
}
