import { describe, expect, it } from 'vitest';
import { ClusterRunnerError } from '../../shared/errors.ts';
import {
  MAX_JOB_FILE_BYTES,
  RESERVED_VARIABLES,
  atomCommandString,
  joinCommands,
  parseJobDefinition,
  parseJobFile,
} from '../../shared/job-config.ts';

function errorOf(action: () => unknown): ClusterRunnerError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(ClusterRunnerError);
    return error as ClusterRunnerError;
  }
  throw new Error('expected an error');
}

const MINIMAL = { commands: ['echo $X'], atomizers: [{ X: 'seq 3' }] };

describe('parseJobDefinition', () => {
  it('reads every key, with defaults for the optional ones', () => {
    expect(parseJobDefinition('Hello', MINIMAL)).toEqual({
      name: 'Hello',
      commands: ['echo $X'],
      atomizers: [{ variable: 'X', command: 'seq 3' }],
      setupBuild: [],
      teardownBuild: [],
      maxExecutors: null,
      maxExecutorsPerWorker: null,
      atomTimeoutS: null,
      retries: 0,
    });

    const job = parseJobDefinition('Full', {
      ...MINIMAL,
      setup_build: ['make deps'],
      teardown_build: ['make clean'],
      max_executors: 8,
      max_executors_per_worker: 2,
      atom_timeout: 1.5,
      retries: 3,
    });
    expect(job).toMatchObject({
      setupBuild: ['make deps'],
      teardownBuild: ['make clean'],
      maxExecutors: 8,
      maxExecutorsPerWorker: 2,
      atomTimeoutS: 1.5,
      retries: 3,
    });
  });

  it('returns a deeply frozen object', () => {
    const job = parseJobDefinition('Hello', MINIMAL);
    expect(Object.isFrozen(job)).toBe(true);
    expect(Object.isFrozen(job.commands)).toBe(true);
    expect(Object.isFrozen(job.atomizers)).toBe(true);
    expect(Object.isFrozen(job.atomizers[0])).toBe(true);
  });

  it('accepts max_executors_per_slave as the alias of max_executors_per_worker', () => {
    expect(parseJobDefinition('J', { ...MINIMAL, max_executors_per_slave: 4 }).maxExecutorsPerWorker).toBe(4);
    expect(
      errorOf(() => parseJobDefinition('J', { ...MINIMAL, max_executors_per_slave: 4, max_executors_per_worker: 4 }))
        .message,
    ).toContain('not both');
  });

  it('reads several entries of one atomizer map as several atomizers, in order', () => {
    const job = parseJobDefinition('J', { commands: ['x'], atomizers: [{ A: 'a', B: 'b' }, { C: 'c' }] });
    expect(job.atomizers).toEqual([
      { variable: 'A', command: 'a' },
      { variable: 'B', command: 'b' },
      { variable: 'C', command: 'c' },
    ]);
  });

  it('treats an optional key left empty (null) as absent', () => {
    expect(parseJobDefinition('J', { ...MINIMAL, setup_build: null, max_executors: null }).setupBuild).toEqual([]);
  });

  const badCases: [string, Record<string, unknown>, string][] = [
    ['missing commands', { atomizers: [{ X: 'a' }] }, 'Job "Bad": "commands" must be a non-empty list of strings'],
    ['empty commands', { ...MINIMAL, commands: [] }, '"commands" must be a non-empty list of strings'],
    ['commands as a string', { ...MINIMAL, commands: 'make' }, '"commands" must be a non-empty list of strings (got the string "make")'],
    ['only blank commands', { ...MINIMAL, commands: [' ', ';'] }, '"commands" must be a non-empty list of strings'],
    ['a command that YAML read as a map', { ...MINIMAL, commands: [{ 'echo a': 'b' }] }, 'entry 1 is a map; quote a command'],
    ['missing atomizers', { commands: ['x'] }, 'Job "Bad": "atomizers" must be a non-empty list of maps'],
    ['empty atomizers', { ...MINIMAL, atomizers: [] }, '"atomizers" must be a non-empty list of maps'],
    ['atomizer as a string', { ...MINIMAL, atomizers: ['X: seq 3'] }, '"atomizers" entry 1 must be a map {VARIABLE: command}'],
    ['atomizer as an empty map', { ...MINIMAL, atomizers: [{}] }, '"atomizers" entry 1 must be a map'],
    ['atomizer command not a string', { ...MINIMAL, atomizers: [{ X: 3 }] }, 'the command of "X" must be a non-empty string'],
    ['atomizer variable with a dash', { ...MINIMAL, atomizers: [{ 'MY-VAR': 'a' }] }, 'variable "MY-VAR" must be letters, digits and underscores'],
    ['atomizer variable starting with a digit', { ...MINIMAL, atomizers: [{ '1X': 'a' }] }, 'variable "1X" must be letters'],
    ['setup_build as a string', { ...MINIMAL, setup_build: 'make' }, '"setup_build" must be a list of strings'],
    ['teardown_build with a number', { ...MINIMAL, teardown_build: ['a', 2] }, '"teardown_build" must be a list of strings (entry 2 is 2)'],
    ['max_executors zero', { ...MINIMAL, max_executors: 0 }, '"max_executors" must be a positive integer (got 0)'],
    ['max_executors fractional', { ...MINIMAL, max_executors: 1.5 }, '"max_executors" must be a positive integer'],
    ['max_executors as a string', { ...MINIMAL, max_executors: '2' }, '"max_executors" must be a positive integer (got the string "2")'],
    ['max_executors_per_worker negative', { ...MINIMAL, max_executors_per_worker: -1 }, '"max_executors_per_worker" must be a positive integer'],
    ['max_executors_per_slave zero', { ...MINIMAL, max_executors_per_slave: 0 }, '"max_executors_per_slave" must be a positive integer'],
    ['atom_timeout zero', { ...MINIMAL, atom_timeout: 0 }, '"atom_timeout" must be a positive number of seconds'],
    ['atom_timeout as a string', { ...MINIMAL, atom_timeout: '10s' }, '"atom_timeout" must be a positive number of seconds'],
    ['retries negative', { ...MINIMAL, retries: -1 }, '"retries" must be an integer >= 0 (got -1)'],
    ['retries as a boolean', { ...MINIMAL, retries: true }, '"retries" must be an integer >= 0 (got true)'],
    ['an unknown key', { ...MINIMAL, comands: ['x'] }, 'Job "Bad": unknown key "comands". Known keys: commands, atomizers, setup_build'],
  ];
  it.each(badCases)('refuses %s', (_name, raw, message) => {
    const error = errorOf(() => parseJobDefinition('Bad', raw));
    expect(error.code).toBe('BAD_JOB_CONFIG');
    expect(error.status).toBe(400);
    expect(error.message).toContain(message);
  });

  it.each([...RESERVED_VARIABLES, 'CLUSTERRUNNER_SECRET'])('refuses the reserved variable %s', (variable) => {
    const error = errorOf(() => parseJobDefinition('Bad', { ...MINIMAL, atomizers: [{ [variable]: 'seq 3' }] }));
    expect(error.message).toContain(`variable "${variable}" is reserved`);
  });

  it('reports every problem of a job at once', () => {
    const error = errorOf(() => parseJobDefinition('Bad', { commands: [], atomizers: [], retries: -1, extra: 1 }));
    expect(error.message.split('\n')).toHaveLength(4);
  });

  it.each([
    ['a list', ['x'], 'got a list'],
    ['a string', 'x', 'got the string "x"'],
    ['null', null, 'got nothing'],
  ])('refuses a job that is %s', (_name, raw, detail) => {
    const error = errorOf(() => parseJobDefinition('Bad', raw));
    expect(error.message).toContain('Job "Bad" must be a map of keys');
    expect(error.message).toContain(detail);
  });
});

describe('parseJobFile', () => {
  const twoJobs = 'Beta:\n  commands: [b]\n  atomizers: [{X: b}]\nAlpha:\n  commands: [a]\n  atomizers: [{X: a}]\n';

  it('picks the only job when no name is given', () => {
    const job = parseJobFile('Hello:\n  commands:\n    - echo $X\n  atomizers:\n    - X: seq 3\n', null);
    expect(job.name).toBe('Hello');
    expect(job.atomizers).toEqual([{ variable: 'X', command: 'seq 3' }]);
  });

  it('picks the named job', () => {
    expect(parseJobFile(twoJobs, 'Alpha').commands).toEqual(['a']);
  });

  it('asks for a job name when several jobs are defined, listing them in file order', () => {
    const error = errorOf(() => parseJobFile(`${twoJobs}7:\n  commands: [c]\n  atomizers: [{X: c}]\n`, null));
    expect(error.code).toBe('JOB_NAME_REQUIRED');
    expect(error.status).toBe(400);
    expect(error.message).toBe(
      'Multiple jobs are defined in this project but you did not specify one. ' +
        'Specify one of the following job names: Beta, Alpha, 7',
    );
  });

  it('names the defined jobs when the job name is unknown', () => {
    const error = errorOf(() => parseJobFile(twoJobs, 'Gamma'));
    expect(error.code).toBe('UNKNOWN_JOB');
    expect(error.message).toBe('Job "Gamma" is not defined in clusterrunner.yaml. Defined jobs: Beta, Alpha');
  });

  it('validates the chosen job, naming it', () => {
    const error = errorOf(() => parseJobFile('Hello:\n  commands: make\n  atomizers: [{X: a}]\n', null));
    expect(error.code).toBe('BAD_JOB_CONFIG');
    expect(error.message).toContain('Job "Hello": "commands" must be a non-empty list of strings');
  });

  it('accepts the per-slave alias from YAML', () => {
    const job = parseJobFile('J:\n  commands: [a]\n  atomizers: [{X: a}]\n  max_executors_per_slave: 2\n', null);
    expect(job.maxExecutorsPerWorker).toBe(2);
  });

  it('keeps anchors and merge keys working', () => {
    const yaml = [
      'base: &base',
      '  commands: [make test]',
      '  atomizers: [{X: ls}]',
      'Fast:',
      '  <<: *base',
      '  retries: 1',
    ].join('\n');
    expect(parseJobFile(yaml, 'Fast')).toMatchObject({ commands: ['make test'], retries: 1 });
  });

  it.each([
    ['empty text', ''],
    ['only a comment', '# nothing here\n'],
    ['an empty map', '{}'],
  ])('refuses %s', (_name, text) => {
    const error = errorOf(() => parseJobFile(text, null));
    expect(error.code).toBe('BAD_JOB_FILE');
    expect(error.message).toContain('clusterrunner.yaml is empty');
  });

  it.each([
    ['a list', '- a\n- b\n', 'got a list'],
    ['a string', 'hello\n', 'got the string "hello"'],
  ])('refuses a file that is %s', (_name, text, detail) => {
    const error = errorOf(() => parseJobFile(text, null));
    expect(error.message).toContain('must be a map of job name to job');
    expect(error.message).toContain(detail);
  });

  it('reports a YAML syntax error with its line', () => {
    const error = errorOf(() => parseJobFile('Hello:\n  commands: [a\n  atomizers: x\n"unclosed\n', null));
    expect(error.code).toBe('BAD_JOB_FILE');
    expect(error.message).toMatch(/clusterrunner.yaml is not valid YAML: .* at line \d+, column \d+/s);
  });

  it('refuses duplicate keys', () => {
    const error = errorOf(() => parseJobFile('J:\n  commands: [a]\n  commands: [b]\n  atomizers: [{X: a}]\n', null));
    expect(error.message).toContain('Map keys must be unique at line 3');
  });

  it('refuses a text over 1 MiB', () => {
    const text = `J:\n  commands: [a]\n  atomizers: [{X: a}]\n# ${'x'.repeat(MAX_JOB_FILE_BYTES)}\n`;
    expect(errorOf(() => parseJobFile(text, null)).message).toContain('larger than 1048576 bytes');
  });

  it('refuses an alias bomb', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x]'];
    for (const [name, previous] of [['b', 'a'], ['c', 'b'], ['d', 'c'], ['e', 'd']] as const) {
      lines.push(`${name}: &${name} [${Array(9).fill(`*${previous}`).join(', ')}]`);
    }
    const error = errorOf(() => parseJobFile(lines.join('\n'), null));
    expect(error.code).toBe('BAD_JOB_FILE');
    expect(error.message).toContain('alias');
  });
});

describe('joinCommands', () => {
  it.each<[string, string[], string]>([
    ['joins with &&', ['a', 'b'], 'a && b'],
    ['strips a trailing semicolon', ['a', 'b;'], 'a && b'],
    ['strips semicolons with whitespace before them', ['a ; ;', 'b'], 'a && b'],
    ['trims entries', ['  a  ', '\tb\n'], 'a && b'],
    ['drops entries that become empty', ['a', '  ', ';', 'b'], 'a && b'],
    ['joins after a background & with a space', ['x &', 'y'], 'x & y'],
    ['joins after an explicit && with a space', ['p &&', 'q'], 'p && q'],
    ['joins after a pipe with a space', ['cat f |', 'wc -l'], 'cat f | wc -l'],
    ['keeps an escaped semicolon', ['find . -exec rm {} \\;', 'b'], 'find . -exec rm {} \\; && b'],
    ['returns one command alone', ['only'], 'only'],
    ['returns an empty string for nothing', [], ''],
  ])('%s', (_name, commands, joined) => {
    expect(joinCommands(commands)).toBe(joined);
  });
});

describe('atomCommandString', () => {
  it('is the export line of the original', () => {
    expect(atomCommandString('TEST_FILE', 'tests/a b.py')).toBe('export TEST_FILE="tests/a b.py";');
  });
});
