/**
 * Issue 17, items 8 and 9: the original's conf files, flags and init scripts start our services, and the
 * worker's exit status when it gives up on its master. Real `clusterrunner` processes on loopback.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, eventually, spawnCli, tempDir } from '../support/cluster.ts';
import { loadConf } from '../../shared/conf.ts';
import { ClusterRunnerError } from '../../shared/errors.ts';

afterEach(cleanupAll);

const SECRET = 'compat-secret-0123456789';

/** A port that was free a moment ago: the original's conf names the master's port for the worker too. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

/** Every one of the original's 22 keys, where its own docs put them, with values its users write. */
function originalConf(dir: string, port: number, extra = ''): string {
  const file = join(dir, 'clusterrunner.conf');
  writeFileSync(file, [
    '[general]',
    `secret = ${SECRET}`,
    `base_directory = ${join(dir, 'base')}`,
    "log_level = 'WARNING'",
    `build_symlink_directory = ${join(dir, 'symlinks')}`,
    'hostname = localhost',
    `log_filename = ${join(dir, 'log', 'clusterrunner.log')}`,
    'max_log_file_size = 52428800',
    `eventlog_filename = ${join(dir, 'log', 'eventlog.json')}`,
    'git_strict_host_key_checking = False',
    'cors_allowed_origins_regex = None',
    'get_project_from_master = True',
    'default_http_timeout = 30',
    'https_cert_file = None',
    'https_key_file = None',
    '',
    '[master]',
    `port = ${port}`,
    'slaves = hostname01.example.com, hostname02.example.com',
    'unresponsive_slaves_cleanup_interval = 600',
    extra,
    '',
    '[slave]',
    `port = ${port + 1}`,
    'num_executors = 2',
    'master_hostname = 127.0.0.1',
    `master_port = ${port}`,
    'heartbeat_interval = 1',
    'heartbeat_failure_threshold = 10',
    '',
  ].join('\n'), { mode: 0o600 });
  return file;
}

const IGNORED = ['build_symlink_directory', 'slaves', 'git_strict_host_key_checking', 'cors_allowed_origins_regex',
  'get_project_from_master', 'default_http_timeout', 'unresponsive_slaves_cleanup_interval'];

describe("the original's conf keys", () => {
  it('maps master_hostname + master_port, max_log_file_size, log_filename and eventlog_filename, and warns once for each other key', () => {
    const dir = tempDir('cr-compat-conf-');
    const file = originalConf(dir, 47500);
    const master = loadConf({ file, role: 'master', env: {} });
    expect(master).toMatchObject({ port: 47500, logLevel: 'warn', logMaxBytes: 52428800, compatibility: 'default',
      logFile: join(dir, 'log', 'clusterrunner.log'), eventlogFile: join(dir, 'log', 'eventlog.json') });
    expect(master.warnings).toHaveLength(IGNORED.length);
    IGNORED.forEach((key, index) => expect(master.warnings[index]).toContain(`"${key}"`));

    const worker = loadConf({ file, role: 'worker', env: {} });
    expect(worker).toMatchObject({ masterUrl: 'http://127.0.0.1:47500', numExecutors: 2, heartbeatIntervalMs: 1000, eventlogFile: null });
    // The five [general] keys it ignores, and the event log it does not keep.
    expect(worker.warnings).toHaveLength(6);
    expect(worker.warnings.at(-1)).toContain('workers keep no event log');
  });

  it('lets master_url win over master_hostname and master_port, and takes --eventlog-file STDOUT', () => {
    const dir = tempDir('cr-compat-conf-');
    writeFileSync(join(dir, 'c.conf'), `[general]\nsecret = ${SECRET}\n[slave]\nmaster_hostname = a.example\nmaster_port = 1\nmaster_url = http://b.example:2\n`, { mode: 0o600 });
    expect(loadConf({ file: join(dir, 'c.conf'), role: 'worker', env: {} }).masterUrl).toBe('http://b.example:2');
    const onlyPort = join(dir, 'p.conf');
    writeFileSync(onlyPort, `[general]\nsecret = ${SECRET}\n[slave]\nmaster_port = 43010\n`, { mode: 0o600 });
    expect(loadConf({ file: onlyPort, role: 'worker', env: {} }).masterUrl).toBe('http://localhost:43010');
    expect(loadConf({ file: onlyPort, role: 'master', env: {}, overrides: { eventlog_filename: 'STDOUT' } }).eventlogFile).toBe('STDOUT');
  });

  it("refuses bad values of the original's keys, naming each with its line", () => {
    const dir = tempDir('cr-compat-conf-');
    const file = join(dir, 'bad.conf');
    writeFileSync(file, `[general]\nsecret = ${SECRET}\nmax_log_file_size = big\nlog_filename = relative/log.txt\n[slave]\nmaster_port = 70000\n`, { mode: 0o600 });
    let error: unknown = null;
    try {
      loadConf({ file, role: 'worker', env: {} });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ClusterRunnerError);
    const message = (error as Error).message;
    expect(message).toContain('3 problems');
    expect(message).toContain(`${file} line 3: "max_log_file_size" must be a number of bytes >= 1024`);
    expect(message).toContain(`${file} line 4: "log_filename" must be an absolute path`);
    expect(message).toContain(`${file} line 6: "master_port" must be an integer from 1 to 65535`);
  });
});

describe("clusterrunner master and worker with the original's conf file", () => {
  it('start with all 22 keys (the worker as `slave --port --eventlog-file`), log where log_filename says, and write the event log', async () => {
    const dir = tempDir('cr-compat-start-');
    const port = await freePort();
    const file = originalConf(dir, port, 'compatibility = original');
    const master = spawnCli(['master', '-c', file]);
    const url = `http://127.0.0.1:${port}`;
    await eventually(`master answering on ${url}`, async () => (await fetch(`${url}/v1`)).ok);
    const worker = spawnCli(['slave', '-c', file, '--port', String(port + 1), '--eventlog-file', join(dir, 'worker-events.json')]);
    const slaves = await eventually('the worker connected', async () => {
      const body = (await (await fetch(`${url}/v1/slave`)).json()) as { slaves: { is_alive: boolean; num_executors: number }[] };
      return body.slaves.length === 1 && body.slaves[0]!.is_alive ? body.slaves : null;
    });
    expect(slaves[0]!.num_executors).toBe(2);
    // compatibility = original (a key of ours in the same file) is in force: GET / carries master.slaves.
    const root = (await (await fetch(`${url}/`)).json()) as { master: { slaves: unknown[] } };
    expect(root.master.slaves).toHaveLength(1);

    const logFile = join(dir, 'log', 'clusterrunner.log');
    const log = await eventually('both warnings in the log file', () => {
      const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
      return text.includes('--port') ? text : null;
    });
    for (const key of IGNORED) expect(log).toContain(`\\"${key}\\" is the original ClusterRunner's and is ignored`);
    expect(log).toContain('workers keep no event log');
    await eventually('events in the eventlog file', () => {
      const eventlog = join(dir, 'log', 'eventlog.json');
      return existsSync(eventlog) && readFileSync(eventlog, 'utf8').includes('"__tag__"');
    });
    expect(existsSync(join(dir, 'worker-events.json'))).toBe(false);

    worker.child.kill('SIGTERM');
    expect(await worker.exited, worker.output()).toBe(0);
    master.child.kill('SIGTERM');
    expect(await master.exited, master.output()).toBe(0);
  });
});

describe('a worker that gives up on its master', () => {
  it('exits with status 1 (a failure, so service managers restart it), after master_unreachable_seconds', async () => {
    const dir = tempDir('cr-compat-giveup-');
    const port = await freePort(); // nothing listens there
    const file = join(dir, 'w.conf');
    writeFileSync(file, `[general]\nsecret = ${SECRET}\nbase_directory = ${join(dir, 'base')}\n[slave]\nmaster_hostname = 127.0.0.1\nmaster_port = ${port}\nmaster_unreachable_seconds = 1\n`, { mode: 0o600 });
    const worker = spawnCli(['worker', '-c', file]);
    expect(await worker.exited, worker.output()).toBe(1);
    expect(worker.output()).toContain('giving up on the master');
  });
});
