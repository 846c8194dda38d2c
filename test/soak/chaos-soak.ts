/**
 * A seeded chaos soak (`npm run soak [-- --seconds N --seed S --workers W --max-rate R]`, never part of
 * `npm test`). A real master and real workers, as CLI processes, run a stream of builds while faults are
 * injected at random: workers SIGKILLed, frozen with SIGSTOP (briefly, or past their lease), drained; the
 * master SIGKILLed and restarted on the same port and base folder, at once or after a long outage (SIGTERM
 * or SIGKILL, down 0-90 s), also while a worker is frozen; builds canceled. Then it checks what the product
 * promises: every build terminal, every atom of a successful build exactly one result, setup and teardown
 * once per worker process per build, no marked process alive, no lease left, and a SQLite file that passes
 * PRAGMA integrity_check. All along a livelock detector reads every log line and the event log: any one
 * message or event tag more than --max-rate times in one second fails the run (issue 15: a refusal loop
 * wrote 5,000 a second). It prints a table and exits 1 if any check fails.
 *
 * The same seed makes the same plan of builds and faults (timings on a loaded machine still vary).
 *
 * Pool mode (`--pool`, or SOAK_POOL=1; SPEC §13): no worker is started by hand. The master's conf has a
 * `[pool soak]` local pool (min 0, max --workers) and the master starts, replaces and reaps the workers; the
 * faults hit whichever pool workers run (found by their command line and the run token), a killed or drained
 * one is not restarted by the soak (the pool must replace it), and a master restart must find its workers
 * again (never more than max connected). At the end the pool must reap down to no worker, and once the
 * master has stopped no worker process of the run may be left. Pool workers outlive a master stop by
 * design (a restarted master takes them back: pool-manager.ts), so "none left" is the reap's doing, and
 * a worker the master lost track of shows up as left. The table adds the pool's starts and stops by
 * reason (POOL_WORKER_STARTED / POOL_WORKER_STOPPED in the event log).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
    'max-rate': { type: 'string', default: '200' },
    pool: { type: 'boolean', default: false },
  },
});
const POOL = args.pool === true || process.env['SOAK_POOL'] === '1';
/** Pool mode: the pool's name in the master's conf, and its windows (short, so a run sees many replacements). */
const POOL_NAME = 'soak';
const REPLACE_DOWN_AFTER_SECONDS = 2;
const REAP_IDLE_AFTER_SECONDS = 5;
const REAP_TIMEOUT_MS = 90_000;
const SECONDS = positive(args.seconds!, '--seconds');
const WORKERS = positive(args.workers!, '--workers');
const MAX_RATE = positive(args['max-rate']!, '--max-rate');
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

function startProcess(name: string, cliArgs: string[], home: string, env: Record<string, string> = {}): ChildProcess {
  mkdirSync(join(root, 'logs'), { recursive: true });
  const log = openSync(join(root, 'logs', `${name}.log`), 'a');
  // Its own process group: a fault hits the daemon and only it (its commands have groups of their own).
  const child = spawn(process.execPath, [CLI, ...cliArgs], {
    detached: true, stdio: ['ignore', log, log], env: { ...process.env, HOME: home, SOAK_RUN: runToken, ...env },
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
/**
 * Prints the name of the pool worker a command runs under: up the parent chain to the `worker … --pool`
 * process, then its `-n` argument (a command's parent may be a helper the worker forks, not the worker).
 */
const POOL_WORKER_NAME_SCRIPT = join(root, 'pool-worker-name.sh');
writeFileSync(POOL_WORKER_NAME_SCRIPT, [
  'p=$PPID',
  `while [ "$p" -gt 1 ] && ! tr '\\0' '\\n' < /proc/$p/cmdline | grep -qx -- --pool; do p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2); done`,
  `tr '\\0' '\\n' < /proc/$p/cmdline | grep -x -A1 -- -n | tail -n 1`,
].join('\n') + '\n');
let masterUrl = '';
let masterConf = '';
let master: ChildProcess | null = null;

/**
 * A fault takes the master down only once it answers (`master` is set then): the next fault could otherwise
 * kill it while it starts, before its signal handlers exist, and this wait would see no master for 30 s.
 */
async function startMaster(): Promise<void> {
  const child = startProcess('master', ['master', '-c', masterConf], masterDir);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the master exited at start (${child.exitCode ?? child.signalCode}); see ${join(root, 'logs', 'master.log')}`);
    }
    if (await fetch(`${masterUrl}/`).then((response) => response.ok, () => false)) {
      master = child;
      return;
    }
    await sleep(100);
  }
  throw new Error('the master did not answer within 30 s');
}

interface Worker {
  readonly name: string;
  readonly dir: string;
  process: ChildProcess | null;
  frozen: boolean;
  /** Which start of this worker: setup and teardown are counted per worker process. */
  generation: number;
}
const workers: Worker[] = [];
/** Worker processes (name#generation) that were SIGKILLed: they owe no teardown. */
const killedProcesses = new Set<string>();

function startWorker(worker: Worker): void {
  const conf = writeConf(worker.dir, [
    '[general]', `secret = ${secret}`, `base_directory = ${join(worker.dir, 'base')}`,
    'heartbeat_interval = 0.25', 'heartbeat_failure_threshold = 12', 'kill_grace_seconds = 0.5',
    '[worker]', `master_url = ${masterUrl}`,
  ]);
  worker.generation++;
  // Setup and teardown commands append this to their build's files: per worker process, per build.
  worker.process = startProcess(worker.name, ['worker', '-e', String(EXECUTORS), '-n', worker.name, '-c', conf], worker.dir,
    { SOAK_WORKER: `${worker.name}#${worker.generation}` });
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
  readonly project: string;
  /** Atoms of 0.01-0.2 s: their subjobs go ahead to busy executors. */
  readonly isShort: boolean;
  canceled: boolean;
}
const posted: PostedBuild[] = [];
let postsRefused = 0;
let postsUnanswered = 0;

function buildJob(atoms: number, seconds: readonly [number, number]): Record<string, unknown> {
  // Each value carries its atom's duration, so the seed decides the whole plan.
  const values = Array.from({ length: atoms }, (_, index) => `${index + 1}:${between(seconds[0], seconds[1]).toFixed(2)}`);
  return {
    commands: [
      'N_ATOM=${N%%:*}; echo "run $N_ATOM"',
      'echo "$N_ATOM" > "$ARTIFACT_DIR/value"',
      'sleep "${N#*:}"',
    ],
    atomizers: [{ N: `printf '%s\\n' ${values.join(' ')}` }],
    // A pool worker has no SOAK_WORKER: its name (one per process) is read from its command line.
    setup_build: [`echo "\${SOAK_WORKER:-$(sh ${POOL_WORKER_NAME_SCRIPT})}" >> "$PROJECT_DIR/setups"`],
    teardown_build: [`echo "\${SOAK_WORKER:-$(sh ${POOL_WORKER_NAME_SCRIPT})}" >> "$PROJECT_DIR/teardowns"`],
  };
}

async function postOne(): Promise<void> {
  // Half the builds have many short atoms: the master sends their next subjob ahead to busy executors
  // (issue 18), which the faults must not turn into lost or doubled work either.
  const isShort = random() < 0.5;
  const atoms = isShort ? 20 + Math.floor(random() * 61) : 5 + Math.floor(random() * 26);
  const project = join(root, 'projects', String(posted.length + postsRefused + postsUnanswered));
  mkdirSync(project, { recursive: true });
  try {
    const response = await request('POST', '/v1/build', { type: 'directory', project_directory: project, config: buildJob(atoms, isShort ? [0.01, 0.2] : [0.05, 1.5]) });
    if (response.status === 202) posted.push({ id: response.body.build_id, atoms, project, isShort, canceled: false });
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

type FaultKind = 'kill_worker' | 'freeze_worker' | 'freeze_worker_past_lease' | 'drain_worker' | 'kill_master' | 'master_outage' |
  'master_outage_and_freeze' | 'cancel_build';
const FAULTS: readonly FaultKind[] = [
  'kill_worker', 'kill_worker', 'freeze_worker', 'freeze_worker_past_lease', 'drain_worker', 'kill_master', 'master_outage',
  'master_outage_and_freeze', 'cancel_build',
];
/** The workers' lease window: heartbeat_interval × heartbeat_failure_threshold (startWorker's conf). */
const LEASE_WINDOW_MS = 250 * 12;
/** The longest master outage injected (issue 15 asks for 0-90 s). */
const MAX_OUTAGE_MS = 90_000;
const injected = new Map<FaultKind, number>();
/** Faults whose recovery ran to its end (the process restarted, the worker thawed). */
const recovered = new Map<FaultKind, number>();
const pending = new Set<Promise<void>>();

function track(work: Promise<void>): void {
  pending.add(work);
  void work.finally(() => pending.delete(work));
}

// ---- pool workers (pool mode) -------------------------------------------------------------------------------

/** Live pool worker processes of this run: `clusterrunner worker … --pool soak` carrying the run token. */
function poolWorkerProcesses(): { pid: number; name: string }[] {
  const found: { pid: number; name: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${entry}/stat`, 'utf8'))) continue;
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[1] !== CLI || argv[2] !== 'worker' || argv[argv.indexOf('--pool') + 1] !== POOL_NAME) continue;
      if (!readFileSync(`/proc/${entry}/environ`, 'latin1').split('\0').includes(`SOAK_RUN=${runToken}`)) continue;
      found.push({ pid: Number(entry), name: argv[argv.indexOf('-n') + 1] ?? '?' });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function pidExited(pid: number): Promise<void> {
  while (isRunning(pid)) await sleep(100);
}

function signalPid(pid: number, signal: NodeJS.Signals, group = true): void {
  try {
    process.kill(group ? -pid : pid, signal);
  } catch {
    // gone already
  }
}

/** A worker process a fault can hit: hand-started (the soak restarts it) or a pool's (the pool replaces it). */
interface Target {
  /** What its setups and teardowns write (buildJob). */
  readonly key: string;
  readonly pid: number;
  readonly hand: Worker | null;
}
const frozenPids = new Set<number>();

function targets(): Target[] {
  if (!POOL) {
    return workers.filter((worker) => worker.process !== null && !worker.frozen)
      .map((worker) => ({ key: `${worker.name}#${worker.generation}`, pid: worker.process!.pid!, hand: worker }));
  }
  return poolWorkerProcesses().filter((found) => !frozenPids.has(found.pid)).map((found) => ({ key: found.name, pid: found.pid, hand: null }));
}

/** Freezes a worker (SIGSTOP) for ms, then thaws it (a pool may have stopped it meanwhile: SIGKILL ends a stopped process). */
async function freeze(target: Target, ms: number): Promise<void> {
  if (target.hand) target.hand.frozen = true;
  frozenPids.add(target.pid);
  signalPid(target.pid, 'SIGSTOP');
  await sleep(ms);
  if (target.hand === null || target.hand.process?.pid === target.pid) signalPid(target.pid, 'SIGCONT');
  frozenPids.delete(target.pid);
  if (target.hand) target.hand.frozen = false;
}

/** The master down for ms (SIGTERM or SIGKILL), then started again on the same port and base folder. */
async function outage(ms: number): Promise<void> {
  const child = master!;
  master = null;
  signalGroup(child, random() < 0.5 ? 'SIGTERM' : 'SIGKILL');
  await exited(child);
  await sleep(ms);
  await startMaster();
}

async function inject(kind: FaultKind): Promise<void> {
  const idle = targets();
  // Counted once past its guard: a fault with nothing to hit is not injected.
  const hit = () => injected.set(kind, (injected.get(kind) ?? 0) + 1);
  switch (kind) {
    case 'kill_worker': {
      if (idle.length === 0) return;
      hit();
      const target = pick(idle);
      killedProcesses.add(target.key);
      if (target.hand) target.hand.process = null;
      signalPid(target.pid, 'SIGKILL');
      await pidExited(target.pid);
      if (target.hand === null) break;
      await sleep(between(500, 2000));
      startWorker(target.hand);
      break;
    }
    case 'freeze_worker': {
      if (idle.length === 0) return;
      hit();
      await freeze(pick(idle), between(1000, 6000));
      break;
    }
    case 'freeze_worker_past_lease': {
      // Past its lease: the master gives its work away and must take it back as the same worker when it thaws.
      if (idle.length === 0) return;
      hit();
      await freeze(pick(idle), LEASE_WINDOW_MS + between(1000, 8000));
      break;
    }
    case 'master_outage': {
      if (master === null) return;
      hit();
      await outage(between(0, MAX_OUTAGE_MS));
      break;
    }
    case 'master_outage_and_freeze': {
      if (master === null || idle.length === 0) return;
      hit();
      const worker = pick(idle);
      const downMs = between(0, MAX_OUTAGE_MS);
      await Promise.all([outage(downMs), freeze(worker, Math.min(downMs + between(0, 10_000), MAX_OUTAGE_MS))]);
      break;
    }
    case 'drain_worker': {
      if (idle.length === 0) return;
      hit();
      const target = pick(idle);
      if (target.hand) target.hand.process = null;
      signalPid(target.pid, 'SIGTERM', false);
      // A drain finishes what runs (atoms of at most 1.5 s); a second SIGTERM after 10 s would be a hang.
      const timer = setTimeout(() => signalPid(target.pid, 'SIGTERM', false), 10_000);
      await pidExited(target.pid);
      clearTimeout(timer);
      if (target.hand) startWorker(target.hand);
      break;
    }
    case 'kill_master': {
      if (master === null) return;
      hit();
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
      hit();
      const build = pick(candidates.slice(-MAX_BUILDS_IN_FLIGHT));
      build.canceled = true;
      await retrying('PUT', `/v1/build/${build.id}`, { status: 'canceled' });
      break;
    }
  }
  recovered.set(kind, (recovered.get(kind) ?? 0) + 1);
}

// ---- the livelock detector --------------------------------------------------------------------------------

/** The busiest second of any one log message (per process log) or event tag, and every second over MAX_RATE. */
let busiest = { what: 'nothing', count: 0, second: 0 };
const livelocks: string[] = [];
/** Per message or tag, the second being counted and its count so far (a second may span two scans). */
const current = new Map<string, { second: number; count: number }>();
const logOffsets = new Map<string, number>();
let lastEventId = 0;
/** At most this much of a log is read per scan: a runaway log is caught on its first megabytes anyway. */
const MAX_SCAN_BYTES = 32 * 1024 * 1024;

function count(what: string, second: number): void {
  const seen = current.get(what);
  if (seen === undefined || seen.second !== second) {
    current.set(what, { second, count: 1 });
    return;
  }
  seen.count++;
  if (seen.count > busiest.count) busiest = { what, count: seen.count, second };
  if (seen.count === MAX_RATE + 1 && livelocks.length < 20) livelocks.push(`${what}: more than ${MAX_RATE} in the second at ${new Date(second * 1000).toISOString()}`);
}

/** Reads what the logs and the event log gained since the last scan. */
function scanForLivelock(): void {
  const logs = join(root, 'logs');
  for (const name of existsSync(logs) ? readdirSync(logs) : []) {
    const file = join(logs, name);
    const from = logOffsets.get(file) ?? 0;
    const size = statSync(file).size;
    if (size <= from) continue;
    const buffer = Buffer.alloc(Math.min(size - from, MAX_SCAN_BYTES));
    const fd = openSync(file, 'r');
    try {
      readSync(fd, buffer, 0, buffer.length, from);
    } finally {
      closeSync(fd);
    }
    const end = buffer.lastIndexOf(10);
    if (end < 0) continue;
    logOffsets.set(file, from + end + 1);
    for (const line of buffer.subarray(0, end).toString('utf8').split('\n')) {
      let entry: { time?: unknown; msg?: unknown };
      try {
        entry = JSON.parse(line) as { time?: unknown; msg?: unknown };
      } catch {
        continue;
      }
      if (typeof entry.time === 'number' && typeof entry.msg === 'string') count(`${name}: "${entry.msg}"`, Math.floor(entry.time / 1000));
    }
  }
  const file = join(masterDir, 'base', 'clusterrunner.db');
  if (!existsSync(file)) return;
  try {
    const database = new Database(file, { readonly: true, fileMustExist: true });
    try {
      const rows = database.prepare('SELECT id, tag, timestamp FROM events WHERE id > ? ORDER BY id LIMIT 200000').all(lastEventId) as { id: number; tag: string; timestamp: number }[];
      for (const row of rows) count(`event ${row.tag}`, Math.floor(row.timestamp));
      if (rows.length > 0) lastEventId = rows[rows.length - 1]!.id;
    } finally {
      database.close();
    }
  } catch {
    // Busy or being replaced by a restart: the next scan reads it.
  }
}

// ---- checks ----------------------------------------------------------------------------------------------

/**
 * Setup and teardown ran once per worker process per build (issue 15): each appends its worker process's
 * name to the build's project folder. A process that was SIGKILLed owes no teardown. Returns the problems
 * and how many setups or teardowns ran more than once.
 */
function checkSetups(): { problems: string[]; duplicated: number; setups: number } {
  const problems: string[] = [];
  let duplicated = 0;
  let setups = 0;
  const tally = (file: string) => {
    const counts = new Map<string, number>();
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    for (const name of text.split('\n').filter((line) => line !== '')) counts.set(name, (counts.get(name) ?? 0) + 1);
    return counts;
  };
  for (const build of posted) {
    const setupsBy = tally(join(build.project, 'setups'));
    const teardownsBy = tally(join(build.project, 'teardowns'));
    for (const name of new Set([...setupsBy.keys(), ...teardownsBy.keys()])) {
      const setup = setupsBy.get(name) ?? 0;
      const teardown = teardownsBy.get(name) ?? 0;
      setups += setup;
      if (setup > 1 || teardown > 1) duplicated += Math.max(0, setup - 1) + Math.max(0, teardown - 1);
      const isKilled = killedProcesses.has(name);
      // A setup stopped before its first line ran (a cancel; the build ending while a late worker still set
      // up, which the master stops; the worker stopping) is torn down all the same: no duplicate.
      const isSetupStopped = setup === 0 && teardown === 1;
      if (!isSetupStopped && (setup !== 1 || (teardown !== 1 && !isKilled) || teardown > 1)) {
        problems.push(`build ${build.id} on ${name}${isKilled ? ' (SIGKILLed)' : ''}: setup ran ${setup} times, teardown ${teardown} times`);
      }
    }
  }
  return { problems, duplicated, setups };
}

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

/** Pool mode: the most pool workers the master had connected at once, and the most worker processes alive. */
const poolPeak = { connected: 0, processes: 0 };
async function watchPool(): Promise<void> {
  poolPeak.processes = Math.max(poolPeak.processes, poolWorkerProcesses().length);
  try {
    const view = (await request('GET', `/v2/pools/${POOL_NAME}`)).body?.pool;
    if (view) poolPeak.connected = Math.max(poolPeak.connected, view.connected_workers);
  } catch {
    // The master is down for a restart.
  }
}

function sum(counts: ReadonlyMap<unknown, number>): number {
  return [...counts.values()].reduce((total, value) => total + value, 0);
}

async function cleanup(): Promise<void> {
  for (const child of children) {
    signalGroup(child, 'SIGCONT');
    signalGroup(child, 'SIGKILL');
  }
  for (const found of POOL ? poolWorkerProcesses() : []) {
    signalPid(found.pid, 'SIGCONT');
    signalPid(found.pid, 'SIGKILL');
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
// A fault's recovery that throws (the master does not come back) ends the run, without leaving processes behind.
process.on('unhandledRejection', (error: unknown) => {
  console.error('the soak itself failed:', error);
  args.keep = true;
  void cleanup().then(() => process.exit(2));
});

async function main(): Promise<number> {
  console.log(`chaos soak: seed ${SEED}, ${SECONDS} s, ${POOL ? `a local pool of 0 to ${WORKERS}` : WORKERS} workers × ${EXECUTORS} executors, folder ${root}`);
  const port = await freePort();
  masterUrl = `http://127.0.0.1:${port}`;
  masterConf = writeConf(masterDir, [
    '[general]', `secret = ${secret}`, `base_directory = ${join(masterDir, 'base')}`, 'kill_grace_seconds = 0.5',
    // Pool workers read the master's conf: the same heartbeats as the hand-started workers' (LEASE_WINDOW_MS).
    ...(POOL ? ['heartbeat_interval = 0.25', 'heartbeat_failure_threshold = 12'] : []),
    '[master]', `port = ${port}`,
    ...(POOL ? [
      `[pool ${POOL_NAME}]`, 'provider = local', 'min_workers = 0', `max_workers = ${WORKERS}`, `executors_per_worker = ${EXECUTORS}`,
      `replace_down_after_seconds = ${REPLACE_DOWN_AFTER_SECONDS}`, `reap_idle_after_seconds = ${REAP_IDLE_AFTER_SECONDS}`, 'start_timeout_seconds = 60',
    ] : []),
  ]);
  await startMaster();
  for (let index = 0; index < (POOL ? 0 : WORKERS); index += 1) {
    const worker: Worker = { name: `soak-worker-${index + 1}`, dir: join(root, `worker-${index + 1}`), process: null, frozen: false, generation: 0 };
    workers.push(worker);
    startWorker(worker);
  }

  const end = Date.now() + SECONDS * 1000;
  let nextFaultAt = Date.now() + between(2000, 5000);
  const detector = setInterval(scanForLivelock, 1000);
  const poolWatch = POOL ? setInterval(() => void watchPool(), 500) : null;
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
  for (const pid of frozenPids) signalPid(pid, 'SIGCONT');

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

  // Pool mode: with no work left the pool reaps down to nothing (min 0) before the master stops.
  let reapedInMs: number | null = null;
  if (POOL) {
    const reapStart = Date.now();
    while (Date.now() - reapStart < REAP_TIMEOUT_MS) {
      const view = (await retrying('GET', `/v2/pools/${POOL_NAME}`))?.body?.pool;
      if (view && view.workers.length === 0 && poolWorkerProcesses().length === 0) {
        reapedInMs = Date.now() - reapStart;
        break;
      }
      await sleep(250);
    }
    if (reapedInMs === null) problems.push(`the pool did not reap down to no worker within ${REAP_TIMEOUT_MS / 1000} s`);
  }

  // Stop everything, then look at the database as it was left.
  for (const worker of workers) if (worker.process) worker.process.kill('SIGTERM');
  await Promise.all(workers.map((worker) => (worker.process ? exited(worker.process) : Promise.resolve())));
  if (master) {
    master.kill('SIGTERM');
    await exited(master);
  }
  if (poolWatch) clearInterval(poolWatch);
  const workersLeft = POOL ? poolWorkerProcesses() : [];
  if (workersLeft.length > 0) problems.push(`${workersLeft.length} pool worker processes left after the master stopped: ${workersLeft.map((found) => `${found.name} (pid ${found.pid})`).join(', ')}`);
  if (poolPeak.connected > WORKERS) problems.push(`${poolPeak.connected} pool workers connected at once, above max_workers ${WORKERS}`);
  clearInterval(detector);
  scanForLivelock();
  if (livelocks.length > 0) problems.push(...livelocks.map((line) => `livelock detector: ${line}`));
  const database = new Database(join(masterDir, 'base', 'clusterrunner.db'), { readonly: true });
  const integrity = (database.prepare('PRAGMA integrity_check').pluck().get() as string) ?? 'no answer';
  const leases = database.prepare('SELECT COUNT(*) FROM leases').pluck().get() as number;
  const poolEvents = database.prepare(`SELECT tag, json_extract(fields, '$.reason') AS reason, COUNT(*) AS n FROM events
    WHERE tag IN ('POOL_WORKER_STARTED', 'POOL_WORKER_STOPPED', 'POOL_WORKER_START_FAILED') GROUP BY tag, reason ORDER BY tag, reason`)
    .all() as { tag: string; reason: string | null; n: number }[];
  const poolRows = database.prepare('SELECT COUNT(*) FROM pool_workers').pluck().get() as number;
  // A pool worker the pool stopped as down or as a failed start (a freeze outlived replace_down_after_seconds
  // or start_timeout_seconds), or whose stop a restarted master finished, may have been SIGKILLed by it: like
  // the soak's own kills, it owes no teardown.
  const poolKilled = database.prepare(`SELECT json_extract(fields, '$.worker') FROM events
    WHERE tag = 'POOL_WORKER_STOPPED' AND json_extract(fields, '$.reason') IN ('down', 'failed_start', 'restart')`).pluck().all() as string[];
  database.close();
  for (const name of poolKilled) killedProcesses.add(name);
  const setupCheck = checkSetups();
  problems.push(...setupCheck.problems);
  if (integrity !== 'ok') problems.push(`integrity_check: ${integrity}`);
  if (leases !== 0) problems.push(`${leases} leases left in the database`);
  if (lost > 0) problems.push(`${lost} results lost`);
  if (duplicated > 0) problems.push(`${duplicated} duplicate results`);

  const rows: [string, string][] = [
    ['seed', String(SEED)],
    ...[...new Set(FAULTS)].map((kind): [string, string] => [`faults: ${kind}`, `${injected.get(kind) ?? 0} injected`]),
    ['faults injected / recovered from', `${sum(injected)} / ${sum(recovered)}`],
    ['faults survived', problems.length === 0 && sum(recovered) === sum(injected) ? `all ${sum(injected)}` : 'not all: see below'],
    ['builds posted (202)', `${posted.length} (${posted.filter((build) => build.isShort).length} of short atoms)`],
    ['posts refused / unanswered', `${postsRefused} / ${postsUnanswered}`],
    ['builds on the master', `${builds.length}: ${[...byStatus].map(([status, count]) => `${count} ${status}`).join(', ')}`],
    ['atoms of SUCCESS builds', String(atoms)],
    ['results lost', String(lost)],
    ['duplicate results', String(duplicated)],
    ['setups run (worker process × build)', String(setupCheck.setups)],
    ['setups or teardowns duplicated', String(setupCheck.duplicated)],
    ['livelock detector', `${livelocks.length === 0 ? 'no livelock' : `${livelocks.length} seconds over the limit`} (limit ${MAX_RATE}/s; ` +
      `busiest: ${busiest.count}/s of ${busiest.what})`],
    ['processes left', String(survivors.length)],
    ...(POOL ? [
      ['pool: workers started', String(poolEvents.find((row) => row.tag === 'POOL_WORKER_STARTED')?.n ?? 0)],
      ['pool: workers stopped (by reason)', poolEvents.filter((row) => row.tag === 'POOL_WORKER_STOPPED').map((row) => `${row.n} ${row.reason}`).join(', ') || 'none'],
      ['pool: failed starts', String(poolEvents.find((row) => row.tag === 'POOL_WORKER_START_FAILED')?.n ?? 0)],
      ['pool: most connected / processes at once', `${poolPeak.connected} / ${poolPeak.processes} (max_workers ${WORKERS})`],
      ['pool: reaped to no worker in', reapedInMs === null ? 'never' : `${(reapedInMs / 1000).toFixed(1)} s after the last build`],
      ['pool: worker processes left after the stop', String(workersLeft.length)],
      ['pool: rows left in pool_workers', String(poolRows)],
    ] as [string, string][] : []),
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
