/**
 * The answers of the master's API (SPEC §2.1, §2.2) as zod schemas: the master's routes build values of
 * these types, and the command line parses what it receives with them, so a master that answers something
 * else is caught at the edge with the field named. Objects are loose: a newer master may add keys.
 */
import { z } from 'zod';
import { ATOM_STATES, BUILD_STATUSES, TERMINAL_STATUSES } from './statuses.ts';
import { ERROR_CODE_NAMES } from './error-codes.ts';

const id = z.number().int().min(0);
const seconds = z.number().nullable();

export const atomViewSchema = z.looseObject({
  id,
  subjob_id: id,
  command_string: z.string(),
  expected_time: seconds,
  actual_time: seconds,
  exit_code: z.number().int().nullable(),
  state: z.enum(ATOM_STATES),
  attempts: z.number().int(),
  worker: z.string().nullable(),
  stop_reason: z.string().nullable(),
  /** SPEC §10: failed at least once, then passed. */
  flaky: z.boolean(),
});
export type AtomView = z.infer<typeof atomViewSchema>;

export const subjobViewSchema = z.looseObject({
  id,
  command: z.string(),
  atoms: z.array(atomViewSchema),
  worker: z.string().nullable(),
  /** The original's word for `worker`, for its clients. */
  slave: z.string().nullable(),
  state: z.enum(ATOM_STATES),
});
export type SubjobView = z.infer<typeof subjobViewSchema>;

export const buildViewSchema = z.looseObject({
  id,
  status: z.enum(BUILD_STATUSES),
  result: z.enum(TERMINAL_STATUSES).nullable(),
  details: z.string().nullable(),
  num_atoms: z.number().int().nullable(),
  num_subjobs: z.number().int(),
  failed_atoms: z.array(atomViewSchema).nullable(),
  artifacts: z.string().nullable(),
  error_message: z.string().nullable(),
  /** Set while the build is ready to run but no worker is connected; gives_up_at null: it waits for ever. */
  waiting_for_workers: z.object({
    since: z.number(), gives_up_at: z.number().nullable(),
    /** Set when workers are connected but none carries every label the job requires (SPEC §13). */
    requires: z.array(z.string()).optional(),
  }).nullable(),
  job_name: z.string().nullable(),
  priority: z.number().int(),
  request_params: z.record(z.string(), z.unknown()),
  state_timestamps: z.record(z.string(), z.number()),
});
export type BuildView = z.infer<typeof buildViewSchema>;

export const workerViewSchema = z.looseObject({
  id,
  name: z.string(),
  /** Same as name, for the original's clients. */
  url: z.string(),
  session_id: z.string(),
  num_executors: z.number().int(),
  num_executors_in_use: z.number().int(),
  current_build_ids: z.array(id),
  current_build_id: id.nullable(),
  is_alive: z.boolean(),
  is_in_shutdown_mode: z.boolean(),
  /** SPEC §13: the pool it belongs to (null: started by hand without --pool), its labels and health. */
  pool: z.string().nullable().optional(),
  labels: z.array(z.string()).optional(),
  /** Epoch seconds of its last heartbeat; null before the first. */
  last_heartbeat: z.number().nullable().optional(),
  health: z.enum(['healthy', 'unhealthy', 'suspect']).optional(),
  /** Why it is unhealthy, in its own words; null when it is not. */
  health_reason: z.string().nullable().optional(),
  /** Figures of its last heartbeat; null where it sent none. */
  cpu_count: z.number().int().nullable().optional(),
  load1: z.number().nullable().optional(),
  memory_total_bytes: z.number().int().nullable().optional(),
  memory_available_bytes: z.number().int().nullable().optional(),
  disk_free_bytes: z.number().int().nullable().optional(),
});
export type WorkerView = z.infer<typeof workerViewSchema>;

/** GET …/atom/:aid/console (SPEC §2.2). */
export const consolePageSchema = z.looseObject({
  offset_line: z.number().int(),
  num_lines: z.number().int(),
  total_num_lines: z.number().int(),
  content: z.string(),
});
export type ConsolePage = z.infer<typeof consolePageSchema>;

const childRoutes = z.record(z.string(), z.string());

export const buildAnswerSchema = z.looseObject({ build: buildViewSchema, child_routes: childRoutes });
export const subjobListSchema = z.looseObject({ subjobs: z.array(subjobViewSchema), child_routes: childRoutes });
export const workerListSchema = z.looseObject({ workers: z.array(workerViewSchema), child_routes: childRoutes });

/** POST /v1/build. */
export const buildCreatedSchema = z.looseObject({ build_id: id, STATUS: z.literal('SUCCESS') });
/** PUT /v1/build/:id. */
export const buildCanceledSchema = z.looseObject({ build_id: id, STATUS: z.literal('SUCCESS') });
/** POST /v1/worker/shutdown (`slaves` under /v1/slave/shutdown). */
export const workersShutdownSchema = z.looseObject({ STATUS: z.literal('SUCCESS'), workers: z.array(id) });

/** Every error answer (SPEC §1); `code` is one of shared/api/error-codes.ts. */
export const errorAnswerSchema = z.looseObject({
  STATUS: z.literal('FAILURE'),
  error: z.string(),
  code: z.enum(ERROR_CODE_NAMES),
});
export type ErrorAnswer = z.infer<typeof errorAnswerSchema>;

/** GET /v1/queue. */
export const queueSchema = z.looseObject({ queue: z.array(buildViewSchema) });
/** GET /v2/builds: one page; `next` and `total` come with SPEC §11's filters. */
export const buildPageSchema = z.looseObject({
  builds: z.array(buildViewSchema),
  next: z.string().nullable().optional(),
  total: z.number().int().optional(),
});
export type BuildListPage = z.infer<typeof buildPageSchema>;
/** GET …/atom/:aid. */
export const atomAnswerSchema = z.looseObject({ atom: atomViewSchema });
/** POST /v1/build/:id/retry (SPEC §10). */
export const retryAnswerSchema = z.looseObject({ build_id: id, num_atoms_retried: z.number().int(), STATUS: z.literal('SUCCESS') });
export type RetryAnswer = z.infer<typeof retryAnswerSchema>;
