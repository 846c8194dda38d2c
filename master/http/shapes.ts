import type { BuildRecord } from '../store/build-store.ts';
import type { AtomRecord, SubjobRecord } from '../store/atom-store.ts';
import { buildDetails } from '../model/build-status.ts';
import { atomCommandString } from '../../shared/job-config.ts';
import { isTerminalStatus } from '../../shared/api/statuses.ts';
import type { AtomView, BuildView, SubjobView, WorkerView } from '../../shared/api/views.ts';
import type { WorkerEntry } from '../workers/worker-registry.ts';
import { createHash } from 'node:crypto';
import { MASK } from '../../shared/mask.ts';
import { attemptStopReason } from '../builds/attempts.ts';

/** The API's JSON shapes (SPEC §2.1), typed by the contract in shared/api/views.ts; field names are the original's, for its clients. */

export function atomShape(atom: AtomRecord): AtomView {
  return {
    id: atom.id,
    subjob_id: atom.subjobId,
    command_string: atomCommandString(atom.variable, atom.value),
    expected_time: atom.expectedTime,
    actual_time: atom.actualTime,
    exit_code: atom.exitCode,
    state: atom.state,
    attempts: atom.attempts,
    worker: atom.worker,
    stop_reason: attemptStopReason(atom.stopReason),
    // SPEC §10: failed at least once, then passed.
    flaky: atom.failedAttempts > 0 && atom.state === 'COMPLETED' && atom.exitCode === 0,
  };
}

export function subjobShape(subjob: SubjobRecord, atoms: readonly AtomRecord[], command: string): SubjobView {
  return {
    id: subjob.id,
    command,
    atoms: atoms.map(atomShape),
    worker: subjob.worker,
    slave: subjob.worker,
    state: subjob.state,
  };
}

/** buildsPath: the builds collection of the tree the client asked in (`/v1/build`, `/v2/builds`), so links work as given. */
/** waitingForWorkers: set while the build is ready to run but no worker is connected (BuildManager.waitingForWorkers). */
export function buildShape(build: BuildRecord, failedAtoms: readonly AtomRecord[] | null, buildsPath: string,
  waitingForWorkers: BuildView['waiting_for_workers'] = null): BuildView {
  const terminal = isTerminalStatus(build.status);
  return {
    id: build.id,
    status: build.status,
    result: isTerminalStatus(build.status) ? build.status : null,
    details: buildDetails(build.completedSubjobs, build.numSubjobs),
    num_atoms: build.numAtoms,
    num_subjobs: build.numSubjobs,
    failed_atoms: terminal ? (failedAtoms ?? []).map(atomShape) : null,
    artifacts: build.artifactsReady ? `${buildsPath}/${build.id}/artifacts.tar.gz` : null,
    error_message: build.errorMessage,
    waiting_for_workers: waitingForWorkers,
    job_name: build.jobName,
    priority: build.priority,
    request_params: viewRequestParams(build.requestParams),
    state_timestamps: build.stateTimestamps,
  };
}

/**
 * What GET /v1/worker shows of a worker's session: a digest, never the value. The session id with the secret
 * is enough to take over a worker's identity (resume its leases), and reads are open by default; the digest
 * still tells two sessions of one worker apart (issue 10, for the record).
 */
function sessionDigest(sessionId: string): string {
  return `sha256:${createHash('sha256').update(sessionId).digest('hex').slice(0, 16)}`;
}

/**
 * The request as views show it (issue 10 item 9): remote_files URLs lose every query value (presigned URLs
 * carry their signature there) and any user or password; the stored request keeps them for the workers.
 */
function viewRequestParams(params: BuildRecord['requestParams']): BuildRecord['requestParams'] {
  const files = (params as Record<string, unknown>)['remote_files'];
  if (typeof files !== 'object' || files === null || Array.isArray(files)) return params;
  const masked = Object.fromEntries(Object.entries(files).map(([name, url]) => [name, typeof url === 'string' ? maskUrlQuery(url) : url]));
  return { ...params, remote_files: masked };
}

function maskUrlQuery(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return value;
  }
  if (url.username !== '') url.username = MASK;
  if (url.password !== '') url.password = MASK;
  const keys = [...url.searchParams.keys()];
  const hash = url.hash;
  url.search = '';
  url.hash = '';
  return `${url.href}${keys.length === 0 ? '' : `?${keys.map((key) => `${encodeURIComponent(key)}=${MASK}`).join('&')}`}${hash}`;
}

export function workerShape(worker: WorkerEntry): WorkerView {
  const buildIds = worker.currentBuildIds();
  return {
    id: worker.id,
    name: worker.name,
    url: worker.name,
    session_id: sessionDigest(worker.sessionId),
    num_executors: worker.numExecutors,
    num_executors_in_use: worker.executorsInUse,
    current_build_ids: buildIds,
    current_build_id: buildIds[0] ?? null,
    is_alive: worker.isAlive,
    is_in_shutdown_mode: worker.isDraining,
    ...healthShape(worker),
  };
}

/** SPEC §13: labels, the last heartbeat, health and the machine figures the worker last reported. */
function healthShape(worker: WorkerEntry): Pick<WorkerView, 'pool' | 'labels' | 'last_heartbeat' | 'health' | 'health_reason' |
  'cpu_count' | 'load1' | 'memory_total_bytes' | 'memory_available_bytes' | 'disk_free_bytes'> {
  const machine = worker.machine;
  return {
    pool: worker.pool,
    labels: [...worker.labels].sort(),
    last_heartbeat: worker.lastHeartbeatMs === null ? null : worker.lastHeartbeatMs / 1000,
    health: worker.health(),
    health_reason: worker.failureSuspicion ?? machine.reason,
    cpu_count: machine.cpuCount ?? null,
    load1: machine.load1 ?? null,
    memory_total_bytes: machine.memoryTotalBytes ?? null,
    memory_available_bytes: machine.memoryAvailableBytes ?? null,
    disk_free_bytes: machine.diskFreeBytes ?? null,
  };
}
