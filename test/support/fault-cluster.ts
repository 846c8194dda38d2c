/**
 * The setup the fault suite (test/faults) repeats: a real master, a fault worker whose atoms wait at gates,
 * a build of fault atoms, and the wait until that worker holds as many atoms as it has executors, their
 * processes up. Optionally the worker dials the master through a TCP proxy the test can cut. Also the
 * suite's cleanup, registered once per file.
 */
import { join } from 'node:path';
import { afterEach } from 'vitest';
import type { MasterConf } from '../../master/server.ts';
import { cleanupAll, eventually, postBuild, startTestMaster, tempDir, type TestMaster } from './cluster.ts';
import {
  atomsRunningOn, cleanupFaults, createGates, faultJob, markedProcesses, startFaultWorker, workerName,
  type FaultWorker, type FaultWorkerOptions, type Gates,
} from './fault-workers.ts';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

/** Stops every master, worker, proxy and marked process a test of this file started. */
export function cleanUpFaultsAfterEach(): void {
  afterEach(async () => {
    await cleanupAll();
    await cleanupFaults();
  });
}

export interface HeldBuildOptions {
  /** Names the worker (workerName(role)), so its processes can be told apart. */
  readonly role: string;
  /** Atoms in the build; the worker holds `executors` of them. */
  readonly atoms: number;
  /** The worker's executors, and so how many atoms it holds; default 2. */
  readonly executors?: number;
  /** Job keys beside faultJob's, given the build's project folder (e.g. a teardown writing into it). */
  readonly job?: (project: string) => Record<string, unknown>;
  readonly ignoresSigterm?: boolean;
  /** The worker dials the master through a TCP proxy the test can cut. */
  readonly viaProxy?: boolean;
  readonly masterConf?: Partial<MasterConf>;
  readonly worker?: Partial<FaultWorkerOptions>;
}

export interface HeldBuild {
  readonly master: TestMaster;
  readonly gates: Gates;
  readonly worker: FaultWorker;
  readonly id: number;
  readonly project: string;
  /** The values of the atoms the worker holds, sorted. */
  readonly held: string[];
  /** Set with viaProxy. */
  readonly proxy: TcpProxy | null;
}

/** Job keys that make each worker tearing the build down append its name to `<project>/teardowns`. */
export function recordingTeardowns(project: string): Record<string, unknown> {
  return { teardown_build: [`echo "$FAULT_WORKER" >> "${join(project, 'teardowns')}"`] };
}

/** A master, a worker holding `executors` atoms of a new build at its gates; resolves once they run. */
export async function startHeldBuild(options: HeldBuildOptions): Promise<HeldBuild> {
  const master = await startTestMaster(options.masterConf ? { conf: options.masterConf } : {});
  const proxy = options.viaProxy ? await startTcpProxy(master.url) : null;
  const gates = createGates();
  const project = tempDir('cr-project-');
  const executors = options.executors ?? 2;
  const worker = await startFaultWorker(master, {
    name: workerName(options.role), executors, holdAtomsAt: gates.dir, ...(proxy ? { masterUrl: proxy.url } : {}), ...options.worker,
  });
  const id = await postBuild(master, {
    type: 'directory', project_directory: project,
    config: faultJob(options.atoms, options.job?.(project) ?? {}, { ignoresSigterm: options.ignoresSigterm ?? false }),
  });
  const held = await eventually(`the ${options.role} worker to hold ${executors} atoms`, async () => {
    const values = await atomsRunningOn(master, id, worker.name);
    return values.length === executors && markedProcesses(worker.name).length > 0 ? values : null;
  });
  return { master, gates, worker, id, project, held: [...held].sort(), proxy };
}
