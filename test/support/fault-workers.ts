/**
 * The fault suite's cast: workers as real CLI processes that a test can SIGKILL, SIGSTOP or cut off, atoms
 * that hold on a worker chosen to fail and run straight through elsewhere, and the counts every fault test
 * asserts (one result per atom, no process left behind).
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { api, eventually, spawnCli, tempDir, writeConf, type CliProcess } from './cluster.ts';
import { atomsOf, downloadArtifacts, listFiles, readText, workersOf } from './build-results.ts';
import { closeAllProxies } from './tcp-proxy.ts';

type Master = { url: string; secret: string };

/** Fast liveness for tests, yet a lease window (3 s) that a loaded 2-core machine never misses by accident. */
export const HEARTBEAT_INTERVAL_S = 0.25;
export const HEARTBEAT_FAILURE_THRESHOLD = 12;
export const LEASE_WINDOW_MS = HEARTBEAT_INTERVAL_S * HEARTBEAT_FAILURE_THRESHOLD * 1000;
export const KILL_GRACE_MS = 500;
/** The worker's reconnect backoff ceiling (worker/connection.ts): the longest a refused worker waits to retry. */
export const RECONNECT_BACKOFF_MAX_MS = 10_000;

/** Every fault test's processes carry this in their environment (the worker passes its own to its commands). */
const RUN_VARIABLE = 'FAULT_RUN';
const WORKER_VARIABLE = 'FAULT_WORKER';
const runToken = `fault-${process.pid}-${randomBytes(4).toString('hex')}`;
const OUTER_MARKER = process.env['CLUSTERRUNNER_MARKER'] === undefined ? undefined : `CLUSTERRUNNER_MARKER=${process.env['CLUSTERRUNNER_MARKER']}`;

export interface FaultWorker {
  readonly name: string;
  /** The folder of its conf file and base directory; a restart reuses both. */
  readonly dir: string;
  readonly process: CliProcess;
  readonly pid: number;
  /** Its id in the master's list, as of its last registration seen by startFaultWorker. */
  readonly id: number;
  /** SIGKILL to the worker's process group (its commands run in groups of their own and survive it). */
  kill(): Promise<void>;
  /** SIGSTOP / SIGCONT to the worker's process group: the socket stays open, nothing is sent or read. */
  freeze(): void;
  thaw(): void;
  /** A signal to the worker process, as a service manager sends it. */
  signal(signal: NodeJS.Signals): void;
}

export interface FaultWorkerOptions {
  readonly name: string;
  readonly executors?: number;
  /** Where the worker dials the master: the master itself (default) or a proxy in front of it. */
  readonly masterUrl?: string;
  /** Atoms on this worker wait until these gates release them (see faultJob); elsewhere they run straight through. */
  readonly holdAtomsAt?: string;
  /** Extra [worker] conf values. */
  readonly worker?: Record<string, string | number>;
  /** Reuse the folder (conf and base directory) of a worker that ran before. */
  readonly dir?: string;
}

export interface Gates {
  /** Give this to the workers whose atoms are to hold (FaultWorkerOptions.holdAtomsAt). */
  readonly dir: string;
  /** Lets held atoms finish: those of the given values, or every one (now and later). */
  release(values: readonly string[] | 'all'): void;
}

/** A fresh folder where held atoms wait for the test's go-ahead. */
export function createGates(): Gates {
  const dir = tempDir('cr-fault-gates-');
  return {
    dir,
    release: (values) => {
      for (const value of values === 'all' ? ['all'] : values) writeFileSync(join(dir, `release-${value}`), '');
    },
  };
}

/** A unique worker name for this test. */
export function workerName(role: string): string {
  return `${role}-${randomBytes(3).toString('hex')}`;
}

/**
 * `clusterrunner worker` as a real process with its own conf and HOME; resolves once the master lists it
 * alive under a new id (a restart of a worker with the same name is told apart by its id).
 */
export async function startFaultWorker(master: Master, options: FaultWorkerOptions): Promise<FaultWorker> {
  const dir = options.dir ?? tempDir('cr-fault-worker-');
  const conf = writeConf(dir, 'worker', {
    general: { secret: master.secret, base_directory: join(dir, 'base') },
    worker: {
      master_url: options.masterUrl ?? master.url,
      heartbeat_interval: HEARTBEAT_INTERVAL_S,
      heartbeat_failure_threshold: HEARTBEAT_FAILURE_THRESHOLD,
      kill_grace_seconds: KILL_GRACE_MS / 1000,
      ...options.worker,
    },
  });
  const knownIds = new Set((await workersOf(master)).map((worker) => worker.id as number));
  const env: NodeJS.ProcessEnv = { HOME: dir, [RUN_VARIABLE]: runToken, [WORKER_VARIABLE]: options.name };
  if (options.holdAtomsAt !== undefined) env['FAULT_GATES'] = options.holdAtomsAt;
  const child = spawnCli(['worker', '-e', String(options.executors ?? 1), '-n', options.name, '-c', conf], { env });
  const listed = await eventually(`worker ${options.name} to connect`, async () => {
    if (child.child.exitCode !== null) throw new Error(`worker exited early: ${child.output()}`);
    return (await workersOf(master)).find((worker) => worker.name === options.name && worker.is_alive && !knownIds.has(worker.id));
  });
  const pid = child.child.pid!;
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-pid, signal);
    } catch {
      // already gone
    }
  };
  return {
    name: options.name,
    dir,
    process: child,
    pid,
    id: listed.id as number,
    kill: async () => {
      signalGroup('SIGKILL');
      await child.exited;
    },
    freeze: () => signalGroup('SIGSTOP'),
    thaw: () => signalGroup('SIGCONT'),
    signal: (signal) => process.kill(pid, signal),
  };
}

/**
 * A job whose atom N prints one line, writes `value` = "N <worker>" to its artifacts, and then, on a worker
 * started with holdAtomsAt, waits until its gates release it. Atoms are their own subjobs (no timing
 * history on a fresh master), so atom N is `artifact_<N-1>_0`.
 */
export function faultJob(atoms: number, extra: Record<string, unknown> = {}, options: { ignoresSigterm?: boolean } = {}): Record<string, unknown> {
  // A held atom that ignores SIGTERM (and so do its sleeps) can only be stopped by the SIGKILL after the grace.
  const trap = options.ignoresSigterm ? 'trap "" TERM; ' : '';
  return {
    commands: [
      `echo "run $N on $${WORKER_VARIABLE}"`,
      `echo "$N $${WORKER_VARIABLE}" > "$ARTIFACT_DIR/value"`,
      `if [ -n "$FAULT_GATES" ]; then ${trap}while [ ! -e "$FAULT_GATES/release-$N" ] && [ ! -e "$FAULT_GATES/release-all" ]; do sleep 0.05; done; fi`,
    ],
    atomizers: [{ N: `seq 1 ${atoms}` }],
    ...extra,
  };
}

/**
 * Live processes started for atoms, setup or teardown (they carry the marker) by the workers of this file, or
 * by one of them, or only those of the atom with that value there.
 */
export function markedProcesses(workerName?: string, atomValue?: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let variables: string[];
    try {
      if (/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${entry}/stat`, 'utf8'))) continue;
      variables = readFileSync(`/proc/${entry}/environ`, 'latin1').split('\0');
    } catch {
      continue;
    }
    if (!variables.includes(`${RUN_VARIABLE}=${runToken}`)) continue;
    const marker = variables.find((variable) => variable.startsWith('CLUSTERRUNNER_MARKER='));
    // When these tests run as an atom themselves, their own workers carry that atom's marker: not theirs to count.
    if (marker === undefined || marker === OUTER_MARKER) continue;
    if (workerName !== undefined && !variables.includes(`${WORKER_VARIABLE}=${workerName}`)) continue;
    if (atomValue !== undefined && !variables.includes(`N=${atomValue}`)) continue;
    found.push(Number(entry));
  }
  return found;
}

/** Atoms of the build held right now by the given worker (IN_PROGRESS there), by value. */
export async function atomsRunningOn(master: Master, buildId: number, name: string): Promise<string[]> {
  const atoms = await atomsOf(master, buildId);
  return atoms.filter((atom) => atom.state === 'IN_PROGRESS' && atom.worker === name).map((atom) => atom.value as string).sort();
}

export interface AtomOutcome {
  readonly value: string;
  readonly worker: string;
  readonly attempts: number;
}

/**
 * The counts every fault test asserts: the build's archive holds exactly one `artifact_<subjob>_0` folder
 * per atom, each with one exit code (0), one `value` and a console output of one run; the API agrees (each
 * atom COMPLETED with exit code 0). Returns, per atom value, the worker whose result was kept and the attempts.
 */
export async function expectOneResultPerAtom(master: Master, buildId: number, atoms: number): Promise<Map<string, AtomOutcome>> {
  const listed = await atomsOf(master, buildId);
  expect(listed).toHaveLength(atoms);
  for (const atom of listed) expect([atom.state, atom.exit_code], `atom ${atom.value}`).toEqual(['COMPLETED', 0]);

  const unpacked = await downloadArtifacts(master, buildId);
  const files = listFiles(unpacked);
  const folders = [...new Set(files.map((file) => file.split('/')[0]!))].sort();
  expect(folders).toEqual(Array.from({ length: atoms }, (_, index) => `artifact_${index}_0`).sort());
  const outcomes = new Map<string, AtomOutcome>();
  for (const folder of folders) {
    expect(readText(unpacked, `${folder}/clusterrunner_exit_code`)).toBe('0\n');
    const [value, worker] = readText(unpacked, `${folder}/value`).trim().split(' ') as [string, string];
    // One run's console output: a second run would have added a second line (or a mix of two runs' files).
    expect(readText(unpacked, `${folder}/clusterrunner_console_output`).trim()).toBe(`run ${value} on ${worker}`);
    expect(folder).toBe(`artifact_${Number(value) - 1}_0`);
    const atom = listed.find((entry) => entry.value === value)!;
    // The API and the archive name the same run.
    expect(atom.worker).toBe(worker);
    outcomes.set(value, { value, worker, attempts: atom.attempts as number });
  }
  return outcomes;
}

/** The master's event log, oldest first. */
export async function eventsOf(master: Master, tag?: string): Promise<any[]> {
  const events = (await api(master, 'GET', '/v1/eventlog')).body.events as any[];
  return tag === undefined ? events : events.filter((event) => event.__tag__ === tag);
}

/** Waits until the marked processes of one worker (or of every worker of the test) are gone. */
export async function expectNoProcessesLeft(workerName?: string, timeoutMs = KILL_GRACE_MS + 5_000): Promise<void> {
  await eventually(`no process of ${workerName ?? 'the test\'s workers'} to be left`, () => markedProcesses(workerName).length === 0, timeoutMs);
}

/** Cleanup for afterEach: proxies closed, and any process a failed test left behind killed. */
export async function cleanupFaults(): Promise<void> {
  await closeAllProxies();
  for (const pid of markedProcesses()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}
