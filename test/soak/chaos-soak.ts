/**
 * A seeded chaos soak (`npm run soak [-- --seconds N --seed S --workers W]`, never part of `npm test`).
 * A real master and real workers, as CLI processes, run a stream of builds while faults are injected at
 * random: workers SIGKILLed, frozen with SIGSTOP, drained; the master SIGKILLed and restarted on the same
 * port and base folder; builds canceled. Then it checks what the product promises: every build terminal,
 * every atom of a successful build exactly one result, no marked process alive, no lease left, and a SQLite
 * file that passes PRAGMA integrity_check. It prints a table and exits 1 if any check fails.
 *
 * The same seed makes the same plan of builds and faults (timings on a loaded machine still vary).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { x as untar } from 'tar';
import { signRequest } from '../../shared/auth.ts';
import { seededRandom } from '../../bench/prng.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const CLI = join(ROOT, 'bin', 'clusterrunner');

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '120' },
    seed: { type: 'string' },
    workers: { type: 'string', default: '3' },
    keep: { type: 'boolean', default: false },
  },
});
const SECONDS = positive(args.seconds!, '--seconds');
const WORKERS = positive(args.workers!, '--workers');
const SEED = args.seed === undefined ? randomBytes(4).readUInt32BE() : positive(args.seed, '--seed');
const EXECUTORS = 2;
const MAX_BUILDS_IN_FLIGHT = 3;
const SETTLE_TIMEOUT_MS = 180_000;

function positive(text: string, name: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) {
    console.error(`${name} must be a non-negative integer, not ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return value;
}

const random = seededRandom(SEED);
const between = (low: number, high: number) => low + random() * (high - low);
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- the cluster -------------------------------------------------------------------------------------------

const runToken = `soak-${process.pid}-${randomBytes(4).toString('hex')}`;
const OUTER_MARKER = process.env['CLUSTERRUNNER_MARKER'] === undefined ? undefined : `CLUSTERRUNNER_MARKER=${process.env['CLUSTERRUNNER_MARKER']}`;
const root = mkdtempSync(join(tmpdir(), 'cr-soak-'));
const secret = randomBytes(16).toString('hex');
const children = new Set<ChildProcess>();

function startProcess(name: string, cliArgs: string[], home: string): ChildProcess {
  mkdirSync(join(root, 'logs'), { recursive: true });
  const log = openSync(join(root, 'logs', `${name}.log`), 'a');
  // Its own process group: a fault hits the daemon and only it (its commands have groups of their own).
  const child = spawn(process.execPath, [CLI, ...cliArgs], {
    detached: true, stdio: ['ignore', log, log], env: { ...process.env, HOME: home, SOAK_RUN: runToken },
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // gone already
  }
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function writeConf(dir: string, lines: string[]): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'clusterrunner.conf');
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  return file;
}

const masterDir = join(root, 'master');
let masterUrl = '';
let masterConf = '';
let master: ChildProcess | null = null;

async function startMaster(): Promise<void> {
  master = startProcess('master', ['master', '-c', masterConf], masterDir);
  const child = master;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the master exited at start (code ${child.exitCode}); see ${join(root, 'logs', 'master.log')}`);
    if (await fetch(`${masterUrl}/`).then((response) => response.ok, () => false)) return;
    await sleep(100);
  }
  throw new Error('the master did not answer within 30 s');
}

interface Worker {
  readonly name: string;
  readonly dir: string;
  process: ChildProcess | null;
  frozen: boolean;
}
const workers: Worker[] = [];

function startWorker(worker: Worker): void {
  const conf = writeConf(worker.dir, [
    '[general]', `secret = ${secret}`, `base_directory = ${join(worker.dir, 'base')}`,
    'heartbeat_interval = 0.25', 'heartbeat_failure_threshold = 12', 'kill_grace_seconds = 0.5',
    '[worker]', `master_url = ${masterUrl}`,
  ]);
  worker.process = startProcess(worker.name, ['worker', '-e', String(EXECUTORS), '-n', worker.name, '-c', conf], worker.dir);
  worker.frozen = false;
}

// ---- the API ---------------------------------------------------------------------------------------------

async function request(method: string, path: string, json?: unknown): Promise<{ status: number; body: any }> {
  const body = json === undefined ? undefined : JSON.stringify(json);
  const headers: Record<string, string> = { ...signRequest(secret, method, path, body ?? '') };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${masterUrl}${path}`, { method, body, headers, signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: response.status, body: parsed };
}

/** The same request until the master answers (it may be down for a restart); null after the deadline. */
async function retrying(method: string, path: string, json?: unknown, deadlineMs = 60_000): Promise<{ status: number; body: any } | null> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    try {
      return await request(method, path, json);
    } catch {
      await sleep(200);
    }
  }
  return null;
}

// ---- builds ----------------------------------------------------------------------------------------------

interface PostedBuild {
  readonly id: number;
  readonly atoms: number;
  canceled: boolean;
}
const posted: PostedBuild[] = [];
let postsRefused = 0;
let postsUnanswered = 0;

function buildJob(atoms: number): Record<string, unknown> {
  // Each value carries its atom's duration, so the seed decides the whole plan.
  const values = Array.from({ length: atoms }, (_, index) => `${index + 1}:${between(0.05, 1.5).toFixed(2)}`);
  return {
    commands: [
      'N_ATOM=${N%%:*}; echo "run $N_ATOM"',
      'echo "$N_ATOM" > "$ARTIFACT_DIR/value"',
      'sleep "${N#*:}"',
    ],
    atomizers: [{ N: `printf '%s\\n' ${values.join(' ')}` }],
  };
}

async function postOne(): Promise<void> {
  const atoms = 5 + Math.floor(random() * 26);
  const project = join(root, 'projects', String(posted.length + postsRefused + postsUnanswered));
  mkdirSync(project, { recursive: true });
  try {
    const response = await request('POST', '/v1/build', { type: 'directory', project_directory: project, config: buildJob(atoms) });
    if (response.status === 202) posted.push({ id: response.body.build_id, atoms, canceled: false });
    else postsRefused++;
  } catch {
    // The master was down: this build was never accepted (or, if it was, the final check finds it).
    postsUnanswered++;
  }
}

async function listBuilds(): Promise<any[] | null> {
  const response = await retrying('GET', '/v1/build');
  return response?.status === 200 ? response.body.builds : null;
}

const TERMINAL = new Set(['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED']);

// ---- faults ----------------------------------------------------------------------------------------------

type FaultKind = 'kill_worker' | 'freeze_worker' | 'drain_worker' | 'kill_master' | 'cancel_build';
const FAULTS: readonly FaultKind[] = ['kill_worker', 'kill_worker', 'freeze_worker', 'freeze_worker', 'drain_worker', 'kill_master', 'cancel_build'];
const injected = new Map<FaultKind, number>();
const pending = new Set<Promise<void>>();

function track(work: Promise<void>): void {
  pending.add(work);
  void work.finally(() => pending.delete(work));
}

async function inject(kind: FaultKind): Promise<void> {
  const idle = workers.filter((worker) => worker.process !== null && !worker.frozen);
  switch (kind) {
    case 'kill_worker': {
      if (idle.length === 0) return;
      const worker = pick(idle);
      const child = worker.process!;
      worker.process = null;
      signalGroup(child, 'SIGKILL');
      await exited(child);
      await sleep(between(500, 2000));
      startWorker(worker);
      break;
    }
    case 'freeze_worker': {
      if (idle.length === 0) return;
      const worker = pick(idle);
      const child = worker.process!;
      worker.frozen = true;
      signalGroup(child, 'SIGSTOP');
      await sleep(between(1000, 6000));
      signalGroup(child, 'SIGCONT');
      worker.frozen = false;
      break;
    }
    case 'drain_worker': {
      if (idle.length === 0) return;
      const worker = pick(idle);
      const child = worker.process!;
      worker.process = null;
      child.kill('SIGTERM');
      // A drain finishes what runs (atoms of at most 1.5 s); a second SIGTERM after 10 s would be a hang.
      const timer = setTimeout(() => child.kill('SIGTERM'), 10_000);
      await exited(child);
      clearTimeout(timer);
      startWorker(worker);
      break;
    }
    case 'kill_master': {
      if (master === null) return;
      const child = master;
      master = null;
      signalGroup(child, 'SIGKILL');
      await exited(child);
      await sleep(between(500, 3000));
      await startMaster();
      break;
    }
    case 'cancel_build': {
      const candidates = posted.filter((build) => !build.canceled);
      if (candidates.length === 0) return;
      const build = pick(candidates.slice(-MAX_BUILDS_IN_FLIGHT));
      build.canceled = true;
      await retrying('PUT', `/v1/build/${build.id}`, { status: 'canceled' });
      break;
    }
  }
  injected.set(kind, (injected.get(kind) ?? 0) + 1);
}

// ---- checks ----------------------------------------------------------------------------------------------

/** Processes the workers started for atoms (the marker) in this soak (the run token). */
function markedProcesses(): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${entry}/stat`, 'utf8'))) continue;
      const variables = readFileSync(`/proc/${entry}/environ`, 'latin1').split('\0');
      const marker = variables.find((variable) => variable.startsWith('CLUSTERRUNNER_MARKER='));
      // Run as an atom itself, the soak's own daemons carry that atom's marker: not theirs to count.
      if (variables.includes(`SOAK_RUN=${runToken}`) && marker !== undefined && marker !== OUTER_MARKER) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

interface ResultCheck {
  atoms: number;
  lost: number;
  duplicated: number;
  problems: string[];
}

/** One folder per atom in the archive, each with its value, exit code 0 and one run's console output. */
async function checkResults(build: any): Promise<ResultCheck> {
  const check: ResultCheck = { atoms: build.num_atoms, lost: 0, duplicated: 0, problems: [] };
  const response = await fetch(`${masterUrl}/v1/build/${build.id}/artifacts.tar.gz`, { signal: AbortSignal.timeout(30_000) });
  if (response.status !== 200) {
    check.problems.push(`build ${build.id}: artifacts answered ${response.status}`);
    check.lost = build.num_atoms;
    return check;
  }
  const dir = join(root, 'unpacked', String(build.id));
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'artifacts.tar.gz');
  writeFileSync(file, Buffer.from(await response.arrayBuffer()));
  await untar({ file, cwd: dir });
  const folders = readdirSync(dir).filter((name) => /^artifact_\d+_\d+$/.test(name));
  const values = new Map<string, number>();
  for (const folder of folders) {
    const read = (name: string) => {
      try {
        return readFileSync(join(dir, folder, name), 'utf8');
      } catch {
        return null;
      }
    };
    const value = read('value')?.trim() ?? null;
    const exitCode = read('clusterrunner_exit_code')?.trim();
    const runs = (read('clusterrunner_console_output') ?? '').split('\n').filter((line) => line.startsWith('run ')).length;
    if (value === null || exitCode !== '0' || runs !== 1) {
      check.problems.push(`build ${build.id} ${folder}: value ${value}, exit code ${exitCode}, ${runs} runs in its console`);
    }
    if (value !== null) values.set(value, (values.get(value) ?? 0) + 1);
  }
  for (let atom = 1; atom <= build.num_atoms; atom += 1) {
    const count = values.get(String(atom)) ?? 0;
    if (count === 0) check.lost++;
    if (count > 1) check.duplicated += count - 1;
  }
  if (folders.length !== build.num_atoms) check.problems.push(`build ${build.id}: ${folders.length} folders for ${build.num_atoms} atoms`);
  return check;
}

// ---- the run ---------------------------------------------------------------------------------------------

async function cleanup(): Promise<void> {
  for (const child of children) {
    signalGroup(child, 'SIGCONT');
    signalGroup(child, 'SIGKILL');
  }
  for (const pid of markedProcesses()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  if (!args.keep) rmSync(root, { recursive: true, force: true });
}

process.on('SIGINT', () => {
  void cleanup().then(() => process.exit(130));
});

async function main(): Promise<number> {
  console.log(`chaos soak: seed ${SEED}, ${SECONDS} s, ${WORKERS} workers × ${EXECUTORS} executors, folder ${root}`);
  const port = await freePort();
  masterUrl = `http://127.0.0.1:${port}`;
  masterConf = writeConf(masterDir, [
    '[general]', `secret = ${secret}`, `base_directory = ${join(masterDir, 'base')}`, 'kill_grace_seconds = 0.5',
    '[master]', `port = ${port}`,
  ]);
  await startMaster();
  for (let index = 0; index < WORKERS; index += 1) {
    const worker: Worker = { name: `soak-worker-${index + 1}`, dir: join(root, `worker-${index + 1}`), process: null, frozen: false };
    workers.push(worker);
    startWorker(worker);
  }

  const end = Date.now() + SECONDS * 1000;
  let nextFaultAt = Date.now() + between(2000, 5000);
  while (Date.now() < end) {
    const builds = await listBuilds();
    const inFlight = builds === null ? MAX_BUILDS_IN_FLIGHT : builds.filter((build) => !TERMINAL.has(build.status)).length;
    if (inFlight < MAX_BUILDS_IN_FLIGHT) await postOne();
    if (Date.now() >= nextFaultAt) {
      track(inject(pick(FAULTS)));
      nextFaultAt = Date.now() + between(3000, 8000);
    }
    await sleep(250);
  }
  console.log('faults stopped; waiting for every build to end');
  await Promise.all(pending);
  for (const worker of workers) if (worker.process === null) startWorker(worker);

  // Every build the master accepted, including any whose answer a restart swallowed.
  const settleEnd = Date.now() + SETTLE_TIMEOUT_MS;
  let builds: any[] = [];
  while (Date.now() < settleEnd) {
    builds = (await listBuilds()) ?? [];
    if (builds.length > 0 && builds.every((build) => TERMINAL.has(build.status))) break;
    await sleep(500);
  }
  const problems: string[] = [];
  const canceledIds = new Set(posted.filter((build) => build.canceled).map((build) => build.id));
  const byStatus = new Map<string, number>();
  let atoms = 0;
  let lost = 0;
  let duplicated = 0;
  for (const build of builds) {
    byStatus.set(build.status, (byStatus.get(build.status) ?? 0) + 1);
    if (!TERMINAL.has(build.status)) problems.push(`build ${build.id} is still ${build.status} after ${SETTLE_TIMEOUT_MS / 1000} s`);
    else if (build.status === 'CANCELED' && !canceledIds.has(build.id)) problems.push(`build ${build.id} is CANCELED but was never canceled`);
    else if (build.status === 'FAILURE' || build.status === 'ERROR') problems.push(`build ${build.id} is ${build.status}: ${build.error_message ?? build.failed_atoms}`);
    if (build.status !== 'SUCCESS') continue;
    const check = await checkResults(build);
    atoms += check.atoms;
    lost += check.lost;
    duplicated += check.duplicated;
    problems.push(...check.problems);
  }
  const unknown = posted.filter((build) => !builds.some((listed) => listed.id === build.id));
  for (const build of unknown) problems.push(`build ${build.id} was accepted but the master does not list it`);

  await sleep(1500);
  const survivors = markedProcesses();
  if (survivors.length > 0) problems.push(`${survivors.length} marked processes still alive: ${survivors.join(', ')}`);

  // Stop everything, then look at the database as it was left.
  for (const worker of workers) if (worker.process) worker.process.kill('SIGTERM');
  await Promise.all(workers.map((worker) => (worker.process ? exited(worker.process) : Promise.resolve())));
  if (master) {
    master.kill('SIGTERM');
    await exited(master);
  }
  const database = new Database(join(masterDir, 'base', 'clusterrunner.db'), { readonly: true });
  const integrity = (database.prepare('PRAGMA integrity_check').pluck().get() as string) ?? 'no answer';
  const leases = database.prepare('SELECT COUNT(*) FROM leases').pluck().get() as number;
  database.close();
  if (integrity !== 'ok') problems.push(`integrity_check: ${integrity}`);
  if (leases !== 0) problems.push(`${leases} leases left in the database`);
  if (lost > 0) problems.push(`${lost} results lost`);
  if (duplicated > 0) problems.push(`${duplicated} duplicate results`);

  const rows: [string, string][] = [
    ['seed', String(SEED)],
    ...[...new Set(FAULTS)].map((kind): [string, string] => [`faults: ${kind}`, `${injected.get(kind) ?? 0} injected`]),
    ['faults survived', problems.length === 0 ? `all ${[...injected.values()].reduce((sum, count) => sum + count, 0)}` : 'not all: see below'],
    ['builds posted (202)', String(posted.length)],
    ['posts refused / unanswered', `${postsRefused} / ${postsUnanswered}`],
    ['builds on the master', `${builds.length}: ${[...byStatus].map(([status, count]) => `${count} ${status}`).join(', ')}`],
    ['atoms of SUCCESS builds', String(atoms)],
    ['results lost', String(lost)],
    ['duplicate results', String(duplicated)],
    ['processes left', String(survivors.length)],
    ['leases left', String(leases)],
    ['integrity_check', integrity],
  ];
  const width = Math.max(...rows.map(([name]) => name.length));
  console.log('');
  for (const [name, value] of rows) console.log(`${name.padEnd(width)}  ${value}`);
  console.log('');
  if (problems.length === 0) {
    console.log('SOAK PASSED');
    return 0;
  }
  console.log(`SOAK FAILED (${problems.length}); logs in ${join(root, 'logs')}:`);
  for (const problem of problems.slice(0, 50)) console.log(`  - ${problem}`);
  args.keep = true;
  return 1;
}

main().then(
  async (code) => {
    await cleanup();
    process.exit(code);
  },
  async (error: unknown) => {
    console.error('the soak itself failed:', error);
    args.keep = true;
    await cleanup();
    process.exit(2);
  },
);
