import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CONF_KEYS, defaultConfPath, loadConf, redactConf } from '../../shared/conf.ts';
import type { Conf, ConfOverrides, ConfRole } from '../../shared/conf.ts';
import { ClusterRunnerError } from '../../shared/errors.ts';

const SECRET = 'abcdefgh12345678';

let folder: string;

beforeEach(() => {
  folder = mkdtempSync(path.join(os.tmpdir(), 'clusterrunner-conf-'));
});

afterEach(() => {
  rmSync(folder, { recursive: true, force: true });
});

/** Writes a conf file with mode 0600 (unless told otherwise) and returns its path. */
function writeConf(text: string, mode = 0o600): string {
  const file = path.join(folder, 'clusterrunner.conf');
  writeFileSync(file, text);
  // chmod, not writeFileSync's mode: that one is masked by the umask (077 when the suite runs as atoms).
  chmodSync(file, mode);
  return file;
}

function load(
  text: string,
  options: { role?: ConfRole; overrides?: ConfOverrides; env?: NodeJS.ProcessEnv } = {},
): Conf {
  return loadConf({
    file: writeConf(text),
    role: options.role ?? 'master',
    overrides: options.overrides,
    env: options.env ?? {},
  });
}

function errorOf(action: () => unknown): ClusterRunnerError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(ClusterRunnerError);
    return error as ClusterRunnerError;
  }
  throw new Error('expected an error');
}

describe('loadConf', () => {
  it('fills every other key with its default', () => {
    const file = writeConf(`[general]\nsecret = ${SECRET}\n`);
    const conf = loadConf({ file, role: 'master', env: {} });
    const home = os.homedir();
    expect(conf).toEqual({
      confFile: file,
      secret: SECRET,
      baseDirectory: path.join(home, '.clusterrunner'),
      logLevel: 'info',
      hostname: os.hostname(),
      port: 43000,
      numExecutors: 1,
      masterUrl: 'http://127.0.0.1:43000',
      heartbeatIntervalMs: 5000,
      heartbeatFailureThreshold: 3,
      masterUnreachableMs: 600_000,
      killGraceMs: 5000,
      maxBodyBytes: 1048576,
      httpRequestTimeoutMs: 60_000,
      httpHeadersTimeoutMs: 20_000,
      maxWorkerConnectsPerSecond: 20,
      httpSendTimeoutMs: 60_000,
      maxConnections: 1000,
      maxConnectionsPerAddress: 100,
      authenticateReads: false,
      allowLocalRepositories: true,
      acceptLegacyDigest: true,
      noWorkerTimeoutMs: 3_600_000,
      httpsCertFile: null,
      httpsKeyFile: null,
      database: path.join(home, '.clusterrunner', 'clusterrunner.db'),
      maxAtoms: 200000,
      atomizerTimeoutMs: 600_000,
      maxAtomizerOutputBytes: 67108864,
      maxConsoleBytes: 67108864,
      maxArtifactBytes: 1073741824,
      maxArtifactFiles: 100000,
      maxConcurrentPreparations: 4,
      gitTimeoutMs: 600_000,
      maxRemoteFileBytes: 1073741824,
      remoteFileTimeoutMs: 300_000,
      runAsUser: null,
      suspectAfterFailures: 3,
      maxSnapshotBytes: 4294967296,
      keepBuildsMs: 30 * 86_400_000,
      maxResultsBytes: 21474836480,
      logMaxBytes: 20971520,
      logKeepFiles: 5,
      maxWorkspaceBytes: 21474836480,
      minDiskFreeBytes: 1073741824,
      labels: [],
      healthCheckCommand: null,
      healthCheckIntervalMs: 30_000,
      commandNice: 10,
      compatibility: 'default',
      logFile: null,
      eventlogFile: null,
      warnings: [],
      pools: [],
    });
    expect(Object.isFrozen(conf)).toBe(true);
  });

  it('puts the database under the configured base directory, expanding ~', () => {
    const conf = load(`[general]\nsecret = ${SECRET}\nbase_directory = ~/cr-base\n`);
    expect(conf.baseDirectory).toBe(path.join(os.homedir(), 'cr-base'));
    expect(conf.database).toBe(path.join(os.homedir(), 'cr-base', 'clusterrunner.db'));
  });

  it('converts seconds to milliseconds, fractions included', () => {
    const conf = load(`[general]\nsecret = ${SECRET}\nheartbeat_interval = 0.5\nkill_grace_seconds = 0\n`);
    expect(conf.heartbeatIntervalMs).toBe(500);
    expect(conf.killGraceMs).toBe(0);
  });

  it('takes the command line over the environment over the file', () => {
    const text = `[general]\nsecret = ${SECRET}\nport = 43001\nnum_executors = 2\nlog_level = debug\n`;
    const env = { CLUSTERRUNNER_PORT: '43002', CLUSTERRUNNER_NUM_EXECUTORS: '3' };
    const conf = load(text, { env, overrides: { port: 43003, hostname: undefined } });
    expect(conf.port).toBe(43003);
    expect(conf.numExecutors).toBe(3);
    expect(conf.logLevel).toBe('debug');
    expect(conf.hostname).toBe(os.hostname());
  });

  it('ignores an empty environment variable', () => {
    const conf = load(`[general]\nsecret = ${SECRET}\nport = 43001\n`, { env: { CLUSTERRUNNER_PORT: '' } });
    expect(conf.port).toBe(43001);
  });

  it('lets a role section override [general]', () => {
    const text = [
      '[general]',
      `secret = ${SECRET}`,
      'port = 43001',
      'num_executors = 2',
      '[master]',
      'port = 43005',
      '[worker]',
      'num_executors = 6',
    ].join('\n');
    expect(load(text, { role: 'master' })).toMatchObject({ port: 43005, numExecutors: 2 });
    expect(load(text, { role: 'worker' })).toMatchObject({ port: 43001, numExecutors: 6 });
    expect(load(text, { role: 'client' })).toMatchObject({ port: 43001, numExecutors: 2 });
  });

  it('reads [slave] as the alias of [worker], [worker] winning when both are set', () => {
    const slaveOnly = `[general]\nsecret = ${SECRET}\n[slave]\nnum_executors = 4\n`;
    expect(load(slaveOnly, { role: 'worker' }).numExecutors).toBe(4);
    expect(load(slaveOnly, { role: 'master' }).numExecutors).toBe(1);
    const both = `[worker]\nnum_executors = 5\n[slave]\nnum_executors = 4\n[general]\nsecret = ${SECRET}\n`;
    expect(load(both, { role: 'worker' }).numExecutors).toBe(5);
  });

  it('gives a client the master URL of [worker] when [general] has none', () => {
    const text = `[general]\nsecret = ${SECRET}\n[worker]\nmaster_url = https://ci.example.com:43000/\n`;
    expect(load(text, { role: 'client' }).masterUrl).toBe('https://ci.example.com:43000');
    const withGeneral = `${text}[general]\nmaster_url = http://other:43000\n`;
    expect(load(withGeneral, { role: 'client' }).masterUrl).toBe('http://other:43000');
  });

  it('accepts a master URL without a scheme, as the original did', () => {
    const conf = load(`[general]\nsecret = ${SECRET}\nmaster_url = buildhost:43000\n`);
    expect(conf.masterUrl).toBe('http://buildhost:43000');
  });

  it('converts True/False/None and the other boolean spellings', () => {
    const text = [
      '[general]',
      `secret = ${SECRET}`,
      'authenticate_reads = True',
      'allow_local_repositories = FALSE',
      'accept_legacy_digest = off',
      'https_cert_file = None',
      'https_key_file =',
    ].join('\n');
    expect(load(text)).toMatchObject({
      authenticateReads: true,
      allowLocalRepositories: false,
      acceptLegacyDigest: false,
      httpsCertFile: null,
      httpsKeyFile: null,
    });
    const spellings = [['yes', true], ['no', false], ['on', true], ['1', true], ['0', false], ['true', true]] as const;
    for (const [value, expected] of spellings) {
      expect(load(`[general]\nsecret = ${SECRET}\nauthenticate_reads = ${value}\n`).authenticateReads).toBe(expected);
    }
  });

  it('reads overrides of any type, null unsetting a nullable key', () => {
    const text = `[general]\nsecret = ${SECRET}\nhttps_cert_file = /a.pem\nhttps_key_file = /a.key\n`;
    const overrides = { authenticate_reads: true, https_cert_file: null, https_key_file: null, heartbeat_interval: 2 };
    expect(load(text, { overrides })).toMatchObject({
      authenticateReads: true,
      httpsCertFile: null,
      httpsKeyFile: null,
      heartbeatIntervalMs: 2000,
    });
  });

  it('reads values as ini does: quotes kept apart, inline comments dropped', () => {
    const conf = load(`[general]\nsecret = "abc;def#ghi"\nlog_level = warn ; the original's warning works too\n`);
    expect(conf.secret).toBe('abc;def#ghi');
    expect(conf.logLevel).toBe('warn');
    expect(load(`[general]\nsecret = ${SECRET}\nlog_level = WARNING\n`).logLevel).toBe('warn');
  });

  it('names an unknown key with its line, counting blank and comment lines', () => {
    const error = errorOf(() => load(`# comment\n\n[general]\nsecret = ${SECRET}\n\n\nprot = 43000\n`));
    expect(error.code).toBe('BAD_CONF');
    expect(error.status).toBe(400);
    const file = path.join(folder, 'clusterrunner.conf');
    expect(error.message).toContain(`${file} line 7: unknown key "prot" in [general]`);
    expect(error.message).toContain('Known keys: secret, base_directory');
  });

  it('names unknown sections, keys outside sections and unreadable lines with their lines', () => {
    const text = `port = 1\n[general]\nsecret = ${SECRET}\n[slaves]\nnum_executors = 2\njust words\n`;
    const error = errorOf(() => load(text));
    expect(error.message).toContain('line 1: key "port" is outside any section');
    expect(error.message).toContain('line 4: unknown section [slaves]');
    expect(error.message).toContain('line 6: expected "[section]" or "key = value", got "just words"');
  });

  it('refuses a key set twice in one section', () => {
    const error = errorOf(() => load(`[general]\nsecret = ${SECRET}\nport = 1\nport = 2\n`));
    expect(error.message).toContain('line 4: key "port" is set twice in [general] (first on line 3)');
  });

  it('reports every problem at once', () => {
    const file = writeConf('[general]\nprot = 1\nport = 70000\n[master]\nnum_executors = 0\nlog_level = loud\n', 0o644);
    const error = errorOf(() =>
      loadConf({
        file,
        role: 'master',
        env: { CLUSTERRUNNER_HEARTBEAT_INTERVAL: 'soon' },
        overrides: { max_atoms: -5 },
      }),
    );
    const lines = error.message.split('\n');
    expect(lines[0]).toBe('The configuration cannot be used (7 problems):');
    expect(error.message).toContain(`${file} line 2: unknown key "prot"`);
    expect(error.message).toContain(`${file} line 3: "port" must be an integer from 1 to 65535 (got "70000")`);
    expect(error.message).toContain(`${file} line 5: "num_executors" must be an integer >= 1 (got "0")`);
    expect(error.message).toContain(`${file} line 6: "log_level" must be one of trace, debug, info`);
    expect(error.message).toContain(
      'environment variable CLUSTERRUNNER_HEARTBEAT_INTERVAL: "heartbeat_interval" must be a number of seconds > 0 (got "soon")',
    );
    expect(error.message).toContain('command line: "max_atoms" must be an integer >= 1 (got "-5")');
    expect(error.message).toContain(`${file}: "secret" is missing`);
  });

  const badValues: [string, string, string][] = [
    ['port', 'abc', '"port" must be an integer from 1 to 65535 (got "abc")'],
    ['port', '0', '"port" must be an integer from 1 to 65535'],
    ['port', '0x10', '"port" must be an integer from 1 to 65535'],
    ['port', '', '"port" must be an integer from 1 to 65535 (it is empty)'],
    ['port', 'None', '"port" must be an integer from 1 to 65535 (it is empty)'],
    ['num_executors', '1.5', '"num_executors" must be an integer >= 1'],
    ['heartbeat_interval', '0', '"heartbeat_interval" must be a number of seconds > 0'],
    ['kill_grace_seconds', '-1', '"kill_grace_seconds" must be a number of seconds >= 0'],
    ['no_worker_timeout_seconds', 'never', '"no_worker_timeout_seconds" must be a number of seconds >= 0'],
    ['master_url', 'ftp://host', '"master_url" must be an http(s) URL'],
    ['authenticate_reads', 'maybe', '"authenticate_reads" must be true or false (got "maybe")'],
    ['base_directory', 'relative/dir', '"base_directory" must be an absolute path (~ allowed)'],
    ['log_level', 'loud', '"log_level" must be one of trace, debug, info, warn, error, fatal, silent'],
    ['hostname', 'two words', '"hostname" must be a host name without spaces'],
    ['max_body_bytes', '1MB', '"max_body_bytes" must be a number of bytes >= 1'],
  ];
  it.each(badValues)('refuses %s = %j, naming the key, its line and what was expected', (key, value, message) => {
    const file = writeConf(`[general]\nsecret = ${SECRET}\n${key} = ${value}\n`);
    const error = errorOf(() => loadConf({ file, role: 'master', env: {} }));
    expect(error.message).toContain(`${file} line 3: ${message}`);
  });

  it('refuses a short secret without echoing it', () => {
    const error = errorOf(() => load('[general]\nsecret = short\n'));
    expect(error.message).toContain('"secret" must be a secret of at least 8 characters');
    expect(error.message).not.toContain('short"');
  });

  it('takes the secret from the environment', () => {
    expect(load('[general]\n', { env: { CLUSTERRUNNER_SECRET: SECRET } }).secret).toBe(SECRET);
  });

  it('wants both HTTPS files or neither', () => {
    const error = errorOf(() => load(`[general]\nsecret = ${SECRET}\nhttps_cert_file = ~/cert.pem\n`));
    expect(error.message).toContain('"https_cert_file" and "https_key_file" must be set together');
  });

  it.skipIf(process.platform === 'win32')('refuses a file holding the secret that others can read', () => {
    const file = writeConf(`[general]\nsecret = ${SECRET}\n`, 0o644);
    const error = errorOf(() => loadConf({ file, role: 'worker', env: {} }));
    expect(error.message).toContain(
      `${file} holds the secret but other users can read it (mode 0644). Fix it with: chmod 600 ${file}`,
    );
  });

  it('accepts a group- and world-readable file that holds no secret', () => {
    const file = writeConf('[general]\nport = 43001\n', 0o644);
    expect(loadConf({ file, role: 'master', env: { CLUSTERRUNNER_SECRET: SECRET } }).port).toBe(43001);
  });

  it.skipIf(process.platform === 'win32')('creates a missing file with mode 0600 and a 64-character secret', () => {
    const file = path.join(folder, 'nested', 'dir', 'clusterrunner.conf');
    const conf = loadConf({ file, role: 'master', env: {}, createIfMissing: true });
    expect(conf.secret).toMatch(/^[0-9a-f]{64}$/);
    expect(readFileSync(file, 'utf8')).toBe(`[general]\nsecret = ${conf.secret}\naccept_legacy_digest = false\n`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    // A second load reads the same file rather than making a new secret.
    expect(loadConf({ file, role: 'worker', env: {}, createIfMissing: true }).secret).toBe(conf.secret);
  });

  it('says where it looked when the file is missing and may not be created', () => {
    const file = path.join(folder, 'absent.conf');
    const error = errorOf(() => loadConf({ file, role: 'client', env: {} }));
    expect(error.code).toBe('BAD_CONF');
    expect(error.message).toContain(`No configuration file at ${file}`);
    expect(error.message).toContain('openssl rand -hex 32');
  });

  it('resolves a relative file name against the current folder', () => {
    const file = writeConf(`[general]\nsecret = ${SECRET}\n`);
    const relative = path.relative(process.cwd(), file);
    expect(loadConf({ file: relative, role: 'master', env: {} }).confFile).toBe(file);
  });
});

describe('redactConf', () => {
  it('hides the secret and keeps the rest', () => {
    const conf = load(`[general]\nsecret = ${SECRET}\n`);
    const redacted = redactConf(conf);
    expect(redacted['secret']).toBe('[redacted]');
    expect(redacted['port']).toBe(43000);
    expect(JSON.stringify(redacted)).not.toContain(SECRET);
  });
});

describe('defaultConfPath', () => {
  it('is ~/.clusterrunner/clusterrunner.conf', () => {
    expect(defaultConfPath()).toBe(path.join(os.homedir(), '.clusterrunner', 'clusterrunner.conf'));
  });
});

describe('worker labels and health check keys (SPEC §13)', () => {
  it('reads labels as a comma list, trimmed and once each, and the check with its interval', () => {
    const text = `[general]\nsecret = ${SECRET}\n[worker]\nlabels = gpu, linux,,gpu\n` +
      'health_check_command = test -d /tmp\nhealth_check_interval_seconds = 2.5\n';
    const conf = load(text, { role: 'worker' });
    expect(conf.labels).toEqual(['gpu', 'linux']);
    expect(conf.healthCheckCommand).toBe('test -d /tmp');
    expect(conf.healthCheckIntervalMs).toBe(2500);
  });

  it.each([['labels', 'has space'], ['labels', 'ok,-dash'], ['health_check_interval_seconds', '0']])('refuses %s = %s, naming the key', (key, value) => {
    expect(() => load(`[general]\nsecret = ${SECRET}\n[worker]\n${key} = ${value}\n`, { role: 'worker' })).toThrow(new RegExp(`"${key}" must be`));
  });
});

describe('command_nice (worker)', () => {
  it('takes 0 to 19', () => {
    for (const value of [0, 19]) {
      expect(load(`[general]\nsecret = ${SECRET}\n[worker]\ncommand_nice = ${value}\n`, { role: 'worker' }).commandNice).toBe(value);
    }
  });

  it.each(['-1', '20', '2.5', 'low'])('refuses command_nice = %s, naming the key and the range', (value) => {
    expect(() => load(`[general]\nsecret = ${SECRET}\n[worker]\ncommand_nice = ${value}\n`, { role: 'worker' }))
      .toThrow(/"command_nice" must be an integer from 0 to 19/);
  });
});

describe('clusterrunner.conf.example', () => {
  const exampleText = readFileSync(new URL('../../clusterrunner.conf.example', import.meta.url), 'utf8');

  it('mentions every key', () => {
    for (const key of CONF_KEYS) expect(exampleText).toMatch(new RegExp(`^#? ?${key} =( |$)`, 'm'));
  });

  it.each(['master', 'worker', 'client'] as const)('loads as the defaults for the %s', (role) => {
    const env = { CLUSTERRUNNER_SECRET: SECRET };
    const fromExample = loadConf({ file: writeConf(exampleText), role, env });
    const fromNothing = loadConf({ file: writeConf('[general]\n'), role, env });
    expect({ ...fromExample, confFile: '' }).toEqual({ ...fromNothing, confFile: '' });
  });
});
