/**
 * What the integration tests read back from a cluster: unpacked build archives, atoms by their value, the
 * processes a build left behind, free ports, and short-lived CLI runs with their streams kept apart.
 */
import { spawn, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { api, CLI, eventually, spawnCli, tempDir, writeConf, type CliProcess } from './cluster.ts';

type Master = { url: string; secret: string };

/** Downloads `artifacts.<kind>` of a build and unpacks it into a fresh folder; returns the folder. */
export async function downloadArtifacts(master: Master, buildId: number, kind: 'tar.gz' | 'zip' = 'tar.gz'): Promise<string> {
  const response = await fetch(`${master.url}/v1/build/${buildId}/artifacts.${kind}`);
  if (response.status !== 200) throw new Error(`artifacts.${kind} of build ${buildId} answered ${response.status}: ${await response.text()}`);
  const dir = tempDir('cr-artifacts-');
  const file = join(dir, `archive.${kind}`);
  writeFileSync(file, Buffer.from(await response.arrayBuffer()));
  const out = join(dir, 'unpacked');
  execFileSync('mkdir', ['-p', out]);
  if (kind === 'tar.gz') execFileSync('tar', ['-xzf', file, '-C', out]);
  else execFileSync('unzip', ['-q', file, '-d', out]);
  return out;
}

/** Every file under dir as a sorted relative path. */
export function listFiles(dir: string, base = dir): string[] {
  const files: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) files.push(...listFiles(path, base));
    else files.push(path.slice(base.length + 1));
  }
  return files.sort();
}

/** Relative path → `dir` or size and SHA-256 of the file, for comparing two unpacked trees. */
export async function fileTree(dir: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const visit = async (relative: string): Promise<void> => {
    for (const name of await readdir(join(dir, relative))) {
      const child = relative === '' ? name : `${relative}/${name}`;
      if ((await lstat(join(dir, child))).isDirectory()) {
        result[`${child}/`] = 'dir';
        await visit(child);
      } else {
        const content = await readFile(join(dir, child));
        result[child] = `${content.length}:${createHash('sha256').update(content).digest('hex')}`;
      }
    }
  };
  await visit('');
  return result;
}

export function readText(dir: string, relative: string): string {
  return readFileSync(join(dir, relative), 'utf8');
}

/** Every atom of a build, each with the subjob id and the value its command_string carries. */
export async function atomsOf(master: Master, buildId: number): Promise<any[]> {
  const response = await api(master, 'GET', `/v1/build/${buildId}/subjob`);
  if (response.status !== 200) throw new Error(`GET subjobs of build ${buildId} answered ${response.status}: ${response.text}`);
  const atoms: any[] = [];
  for (const subjob of response.body.subjobs as any[]) {
    for (const atom of subjob.atoms as any[]) {
      const match = /^export [A-Za-z_][A-Za-z0-9_]*="([\s\S]*)";$/.exec(atom.command_string);
      atoms.push({ ...atom, subjob_id: subjob.id, subjob_worker: subjob.worker, value: match ? match[1] : null });
    }
  }
  return atoms;
}

export async function workersOf(master: Master): Promise<any[]> {
  return (await api(master, 'GET', '/v1/worker')).body.workers as any[];
}

function isAlive(pid: string): boolean {
  try {
    // Field 3 of /proc/<pid>/stat is the state; a zombie has finished.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Live processes whose command line contains marker (this test process excluded). */
export function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const commandLine = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (commandLine.includes(marker) && isAlive(pid)) found.push(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface CliRun {
  readonly code: number | string;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs bin/clusterrunner for a command expected to end by itself, keeping stdout and stderr apart. A run
 * still going after timeoutMs is killed (its group) and reported with code 'TIMEOUT'.
 */
export async function runCli(args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<CliRun> {
  const cwd = options.cwd ?? tempDir('cr-cli-run-');
  const child = spawn(CLI, args, { cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_ENV: 'production', ...options.env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let isTimedOut = false;
  const timer = setTimeout(() => {
    isTimedOut = true;
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }, options.timeoutMs ?? 20_000);
  const code = await new Promise<number | string>((resolve) => child.on('close', (exitCode, signal) => resolve(exitCode ?? signal ?? 'unknown')));
  clearTimeout(timer);
  return { code: isTimedOut ? 'TIMEOUT' : code, stdout, stderr };
}

/** The largest number of [start, end] intervals open at one instant. */
export function maxOverlap(intervals: readonly { start: number; end: number }[]): number {
  // Ends sort before starts at the same instant: touching intervals do not overlap.
  const events = intervals.flatMap((interval) => [{ at: interval.start, delta: 1 }, { at: interval.end, delta: -1 }])
    .sort((a, b) => a.at - b.at || a.delta - b.delta);
  let open = 0;
  let most = 0;
  for (const event of events) {
    open += event.delta;
    most = Math.max(most, open);
  }
  return most;
}

export function overlaps(a: { start: number; end: number }, b: { start: number; end: number }): boolean {
  return a.start < b.end && b.start < a.end;
}

/**
 * A worker as a real process (`clusterrunner worker`) with its own conf file, base folder and HOME; resolves
 * once the master lists it. heartbeat_interval is short so that a killed worker is noticed quickly.
 */
export async function startCliWorker(master: Master, options: { executors?: number; name: string; worker?: Record<string, string | number> }): Promise<CliProcess & { readonly name: string }> {
  const dir = tempDir('cr-cli-worker-');
  const conf = writeConf(dir, 'worker', {
    general: { secret: master.secret, base_directory: join(dir, 'base') },
    worker: { master_url: master.url, heartbeat_interval: 0.2, heartbeat_failure_threshold: 3, kill_grace_seconds: 0.5, ...options.worker },
  });
  const worker = spawnCli(['worker', '-e', String(options.executors ?? 1), '-n', options.name, '-c', conf], { env: { HOME: dir } });
  await eventually(`worker ${options.name} to connect`, async () => {
    if (worker.child.exitCode !== null) throw new Error(`worker exited early: ${worker.output()}`);
    return (await workersOf(master)).some((listed) => listed.name === options.name && listed.is_alive);
  });
  return Object.assign(worker, { name: options.name });
}
