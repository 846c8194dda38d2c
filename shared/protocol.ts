/**
 * Every message between master and worker, one schema each. Both sides validate every frame they receive
 * with these schemas; an invalid frame is answered with an `error` message and never crashes a process.
 *
 * Control messages are JSON text frames. Artifact bytes travel in binary frames: a 4-byte big-endian
 * header length, a JSON ArtifactChunkHeader, then the bytes (a slice of the atom's artifact tar.gz).
 * Frames of one lease are sent in order: atom_started, atom_output..., artifact chunks..., atom_finished.
 */
import { z } from 'zod';

/** 2: mutual authentication (hello, register proof) and sealed master frames, see shared/worker-auth.ts. */
export const PROTOCOL_VERSION = 2;
export const WORKER_CONNECT_PATH = '/v1/worker/connect';
/** Largest frame either side accepts; artifact chunks and output chunks stay well below it. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
export const MAX_OUTPUT_CHUNK_CHARS = 256 * 1024;
export const ARTIFACT_CHUNK_BYTES = 512 * 1024;

/** Close codes: 4401 not authenticated (DESIGN), 4400 protocol violation, 4409 replaced by a newer connection. */
export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_PROTOCOL_ERROR = 4400;
export const CLOSE_REPLACED = 4409;
export const CLOSE_SHUTDOWN = 4000;
/** Closed by the worker: the master did not prove it holds the secret, or sent a frame that was not sealed. */
export const CLOSE_MASTER_UNAUTHENTICATED = 4403;

const id = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const leaseId = z.string().min(1).max(64);
const text = (max: number) => z.string().max(max);
const STOP_REASONS = ['cancel', 'timeout', 'worker_stop', 'lease_lost'] as const;

/** A worker label (SPEC §13, `--labels`): what a job's `requires` names. */
export const LABEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
export const MAX_LABELS = 32;
export const labelList = z.array(z.string().regex(LABEL_PATTERN)).max(MAX_LABELS);

// ---- worker -> master -------------------------------------------------------------------------------

export const registerMessage = z.strictObject({
  type: z.literal('register'),
  protocol_version: z.number().int(),
  name: text(256).min(1),
  num_executors: z.number().int().min(1).max(1024),
  /** Optional (SPEC §13): the pool a worker says it belongs to (`--pool`); pools count it, never stop it. */
  pool: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/).optional(),
  /** Unique per worker process: a reconnect with the same session may resume its leases. */
  session_id: text(64).min(1),
  heartbeat_interval_ms: z.number().int().min(10).max(600_000),
  heartbeat_failure_threshold: z.number().int().min(1).max(100),
  /** Set on reconnect: the id the master gave and the leases still running or finished but unreported. */
  resume: z.strictObject({ worker_id: id, leases: z.array(leaseId).max(1024) }).nullable(),
  /** registerProof() over this connection's binding: a login captured elsewhere does not pass here. */
  proof: z.string().regex(/^[0-9a-f]{64}$/),
  /**
   * The builds set up on this worker (setup finished ok, or still running), so that the master's answer to
   * "is this build set up there" is the worker's own, on every (re)connection (issue 15). Optional: a worker
   * that leaves it out is taken to have none.
   */
  builds: z.array(z.strictObject({ build_id: id, setup: z.enum(['running', 'ok']) })).max(1024).optional(),
  /** Optional: the labels this worker carries (SPEC §13); a job's `requires` runs only where all are carried. */
  labels: labelList.optional(),
  /**
   * Optional: run_subjob may come for a busy executor; the worker runs it as soon as that executor's current
   * subjob ends, so no round trip to the master is waited for between the two (issue 18).
   */
  accepts_queued_subjobs: z.boolean().optional(),
  /** Optional: the worker's disk health (worker/disk-bounds.ts); free_bytes null where it cannot tell. */
  disk: z.strictObject({ state: z.enum(['ok', 'disk_pressure']), free_bytes: z.number().int().min(0).nullable() }).optional(),
});

/**
 * Every field but the type is optional (SPEC §13 health): a worker that sends none is taken as healthy and
 * shown without figures. `health` is the worker's own verdict (its health_check_command, min_disk_free_bytes);
 * unhealthy workers get no new work until a heartbeat says healthy again.
 */
export const heartbeatMessage = z.strictObject({
  type: z.literal('heartbeat'),
  cpu_count: z.number().int().min(0).max(1_000_000).optional(),
  load1: z.number().min(0).max(1e9).optional(),
  memory_total_bytes: z.number().int().min(0).optional(),
  memory_available_bytes: z.number().int().min(0).optional(),
  /** Of the worker's work folder; null where the platform cannot tell. */
  disk_free_bytes: z.number().int().min(0).nullable().optional(),
  health: z.enum(['healthy', 'unhealthy']).optional(),
  /** Why it is unhealthy, in words (a failing check's exit code and output tail, a short disk). */
  health_reason: text(1024).nullable().optional(),
});
export type HeartbeatMessage = z.infer<typeof heartbeatMessage>;

export const setupFinishedMessage = z.strictObject({
  type: z.literal('setup_finished'),
  build_id: id,
  ok: z.boolean(),
  exit_code: z.number().int().nullable(),
  output_tail: text(64 * 1024),
});

export const atomStartedMessage = z.strictObject({
  type: z.literal('atom_started'),
  lease_id: leaseId,
  build_id: id,
  subjob_id: id,
  atom_id: id,
});

export const atomOutputMessage = z.strictObject({
  type: z.literal('atom_output'),
  lease_id: leaseId,
  build_id: id,
  subjob_id: id,
  atom_id: id,
  data: text(MAX_OUTPUT_CHUNK_CHARS),
});

export const atomFinishedMessage = z.strictObject({
  type: z.literal('atom_finished'),
  lease_id: leaseId,
  build_id: id,
  subjob_id: id,
  atom_id: id,
  exit_code: z.number().int(),
  time_s: z.number().min(0),
  stop_reason: z.enum(STOP_REASONS).nullable(),
  /** True when binary artifact chunks for this atom were sent before this message. */
  has_artifacts: z.boolean(),
});

/** The executor is free again (all atoms reported, or the subjob was stopped). */
export const subjobFinishedMessage = z.strictObject({
  type: z.literal('subjob_finished'),
  lease_id: leaseId,
  build_id: id,
  subjob_id: id,
});

/**
 * The worker did not run a subjob it was given (its executor is free again, nothing ran). not_set_up: the
 * build is not set up here (or is being torn down); the master sets it up again before sending more.
 */
export const subjobRefusedMessage = z.strictObject({
  type: z.literal('subjob_refused'),
  lease_id: leaseId,
  build_id: id,
  subjob_id: id,
  reason: z.enum(['not_set_up']),
});

export const teardownFinishedMessage = z.strictObject({
  type: z.literal('teardown_finished'),
  build_id: id,
  ok: z.boolean(),
  exit_code: z.number().int().nullable(),
  output_tail: text(64 * 1024),
});

/** The worker is draining on its own (SIGTERM): it takes no new work. */
export const drainingMessage = z.strictObject({ type: z.literal('draining') });

export const workerMessage = z.discriminatedUnion('type', [
  registerMessage,
  heartbeatMessage,
  setupFinishedMessage,
  atomStartedMessage,
  atomOutputMessage,
  atomFinishedMessage,
  subjobFinishedMessage,
  subjobRefusedMessage,
  teardownFinishedMessage,
  drainingMessage,
]);
export type WorkerMessage = z.infer<typeof workerMessage>;
export type RegisterMessage = z.infer<typeof registerMessage>;
export type SubjobRefusedMessage = z.infer<typeof subjobRefusedMessage>;

export const artifactChunkHeader = z.strictObject({
  type: z.literal('artifact_chunk'),
  lease_id: leaseId,
  build_id: id,
  subjob_id: id,
  atom_id: id,
  /** The last chunk of this atom's archive (it may carry bytes too). */
  final: z.boolean(),
});
export type ArtifactChunkHeader = z.infer<typeof artifactChunkHeader>;

// ---- master -> worker -------------------------------------------------------------------------------

/**
 * The master's first frame, the only one not sealed: its nonce for this connection and its answer to the
 * worker's challenge. Every later frame is a sealed envelope (shared/worker-auth.ts) around one of masterMessage.
 */
export const helloMessage = z.strictObject({
  type: z.literal('hello'),
  protocol_version: z.number().int(),
  master_nonce: z.string().regex(/^[0-9a-f]{64}$/),
  proof: z.string().regex(/^[0-9a-f]{64}$/),
});
export type HelloMessage = z.infer<typeof helloMessage>;

export const registeredMessage = z.strictObject({
  type: z.literal('registered'),
  worker_id: id,
  master_session_id: text(64),
  /** Leases from the resume list the master still honours; the worker stops all others. */
  resumed_leases: z.array(leaseId),
  /**
   * For each started atom of a resumed lease, the bytes of its console output the master holds: output sent
   * into a connection (or to a master) that died is sent again from there.
   */
  received_output: z.array(z.strictObject({ lease_id: leaseId, atom_id: id, bytes: z.number().int().min(0) })).max(65_536),
});

export type RegisteredMessage = z.infer<typeof registeredMessage>;

export const heartbeatAckMessage = z.strictObject({ type: z.literal('heartbeat_ack') });

/**
 * Where a build's project comes from. A worker that cannot use it directly (a directory that is not there,
 * a repository it cannot reach) downloads the master's snapshot of it instead.
 */
export const projectSource = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('directory'), path: text(4096).min(1) }),
  z.strictObject({
    type: z.literal('git'),
    url: text(4096).min(1),
    branch: text(255).min(1),
    remote: text(100).min(1),
    /** The exact commit the master prepared: every worker runs this one, whatever the branch does meanwhile. */
    commit: z.string().regex(/^([0-9a-f]{40}|[0-9a-f]{64})$/),
    /** The folder inside the repository holding clusterrunner.yaml, or null for the root. */
    subdirectory: text(4096).nullable(),
  }),
]);
export type ProjectSource = z.infer<typeof projectSource>;

export const setupBuildMessage = z.strictObject({
  type: z.literal('setup_build'),
  build_id: id,
  project: projectSource,
  /** Path on the master of the signed GET that serves the project as tar.gz. */
  snapshot_path: text(1024),
  /** SPEC §3 remote_files: downloaded into PROJECT_DIR before setup. */
  remote_files: z.record(z.string().max(255), text(4096)),
  setup_command: text(1024 * 1024).nullable(),
  teardown_command: text(1024 * 1024).nullable(),
  command: text(1024 * 1024),
  atom_timeout_ms: z.number().int().min(1).nullable(),
  kill_grace_ms: z.number().int().min(0),
  /** The master keeps this much of an atom's console output; the worker sends no more than that. */
  max_console_bytes: z.number().int().min(1),
  /** The job's junit globs (SPEC §15): the files an atom wrote that match go with its artifacts. */
  junit: z.array(text(1024)).max(32).optional(),
});
export type SetupBuildMessage = z.infer<typeof setupBuildMessage>;

export const runSubjobMessage = z.strictObject({
  type: z.literal('run_subjob'),
  lease_id: leaseId,
  build_id: id,
  subjob_id: id,
  executor_index: z.number().int().min(0),
  build_executor_index: z.number().int().min(0),
  atoms: z.array(z.strictObject({
    atom_id: id,
    command_string: text(1024 * 1024),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), text(1024 * 1024)),
  })).min(1),
});
export type RunSubjobMessage = z.infer<typeof runSubjobMessage>;

export const abortLeaseMessage = z.strictObject({
  type: z.literal('abort_lease'),
  lease_id: leaseId,
  reason: z.enum(STOP_REASONS),
});

/** Stop every atom of the build at once; teardown follows. */
export const cancelBuildMessage = z.strictObject({ type: z.literal('cancel_build'), build_id: id });
/** No more work of this build for this worker: run teardown once running subjobs are done. */
export const teardownBuildMessage = z.strictObject({ type: z.literal('teardown_build'), build_id: id });
/** Drain: finish what runs, tear down, disconnect and exit 0. */
export const shutdownMessage = z.strictObject({ type: z.literal('shutdown') });
export const errorMessage = z.strictObject({ type: z.literal('error'), code: text(64), message: text(4096) });

export const masterMessage = z.discriminatedUnion('type', [
  registeredMessage,
  heartbeatAckMessage,
  setupBuildMessage,
  runSubjobMessage,
  abortLeaseMessage,
  cancelBuildMessage,
  teardownBuildMessage,
  shutdownMessage,
  errorMessage,
]);
export type MasterMessage = z.infer<typeof masterMessage>;

// ---- framing ------------------------------------------------------------------------------------------

export function encodeArtifactChunk(header: ArtifactChunkHeader, bytes: Buffer): Buffer {
  const head = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(head.length);
  return Buffer.concat([length, head, bytes]);
}

export function decodeArtifactChunk(frame: Buffer): { header: ArtifactChunkHeader; bytes: Buffer } {
  if (frame.length < 4) throw new Error('binary frame shorter than its header length');
  const headLength = frame.readUInt32BE(0);
  if (headLength > 4096 || 4 + headLength > frame.length) throw new Error('binary frame header length out of range');
  const header = artifactChunkHeader.parse(JSON.parse(frame.subarray(4, 4 + headLength).toString('utf8')));
  return { header, bytes: frame.subarray(4 + headLength) };
}

/** Parses a text frame; returns a readable reason instead of throwing. */
export function parseFrame<T>(schema: z.ZodType<T>, raw: string): { ok: true; message: T } | { ok: false; error: string } {
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch {
    return { ok: false, error: 'frame is not valid JSON' };
  }
  const parsed = schema.safeParse(data);
  if (parsed.success) return { ok: true, message: parsed.data };
  const issue = parsed.error.issues[0];
  return { ok: false, error: `invalid message${issue ? ` at ${issue.path.join('.') || '(root)'}: ${issue.message}` : ''}` };
}
