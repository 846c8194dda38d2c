import type { Db } from './database.ts';
import { isTerminal, statusesMovingTo, type BuildStatus } from '../model/build-status.ts';
import { IllegalTransitionError } from '../model/illegal-transition.ts';
import type { StoredJob } from '../model/stored-job.ts';

export interface BuildRecord {
  readonly id: number;
  readonly status: BuildStatus;
  readonly requestParams: Readonly<Record<string, unknown>>;
  /** The parsed request, unredacted: a restarted master prepares from it again. */
  readonly request: unknown;
  readonly projectType: string;
  readonly jobName: string | null;
  readonly projectDir: string | null;
  readonly job: StoredJob | null;
  readonly priority: number;
  readonly numAtoms: number | null;
  readonly numSubjobs: number;
  readonly completedSubjobs: number;
  readonly errorMessage: string | null;
  readonly artifactsReady: boolean;
  readonly stateTimestamps: Readonly<Record<string, number>>;
}

interface BuildRow {
  id: number;
  status: BuildStatus;
  request_params: string;
  request: string;
  project_type: string;
  job_name: string | null;
  project_dir: string | null;
  job: string | null;
  priority: number;
  num_atoms: number | null;
  num_subjobs: number;
  completed_subjobs: number;
  error_message: string | null;
  artifacts_ready: number;
  state_timestamps: string;
}

function toRecord(row: BuildRow): BuildRecord {
  return {
    id: row.id,
    status: row.status,
    requestParams: JSON.parse(row.request_params) as Record<string, unknown>,
    request: JSON.parse(row.request) as unknown,
    projectType: row.project_type,
    jobName: row.job_name,
    projectDir: row.project_dir,
    job: row.job === null ? null : (JSON.parse(row.job) as StoredJob),
    priority: row.priority,
    numAtoms: row.num_atoms,
    numSubjobs: row.num_subjobs,
    completedSubjobs: row.completed_subjobs,
    errorMessage: row.error_message,
    artifactsReady: row.artifacts_ready === 1,
    stateTimestamps: JSON.parse(row.state_timestamps) as Record<string, number>,
  };
}

export function nowSeconds(): number {
  return Date.now() / 1000;
}

export function createBuildStore(db: Db) {
  const insert = db.prepare(
    `INSERT INTO builds (status, request_params, request, project_type, job_name, priority, state_timestamps)
     VALUES ('QUEUED', @requestParams, @request, @projectType, @jobName, @priority, @stateTimestamps)`,
  );
  const selectOne = db.prepare<[number], BuildRow>('SELECT * FROM builds WHERE id = ?');
  const selectPage = db.prepare<[number, number], BuildRow>('SELECT * FROM builds ORDER BY id LIMIT ? OFFSET ?');
  const selectByStatus = db.prepare<[], BuildRow>(
    `SELECT * FROM builds WHERE status IN ('QUEUED', 'PREPARING', 'BUILDING') ORDER BY id`,
  );
  const updateStatus = db.prepare(
    `UPDATE builds SET status = @status, error_message = COALESCE(@errorMessage, error_message),
       state_timestamps = json_patch(state_timestamps, @timestamps)
     WHERE id = @id AND status IN (SELECT value FROM json_each(@from))`,
  );
  const updatePrepared = db.prepare(
    `UPDATE builds SET project_dir = @projectDir, job = @job, job_name = @jobName, num_atoms = @numAtoms,
       num_subjobs = @numSubjobs WHERE id = @id`,
  );
  const updateCompleted = db.prepare('UPDATE builds SET completed_subjobs = ? WHERE id = ?');
  const updateArtifacts = db.prepare('UPDATE builds SET artifacts_ready = 1 WHERE id = ?');

  return {
    insert(input: { requestParams: Record<string, unknown>; request: unknown; projectType: string; jobName: string | null; priority: number }): number {
      const result = insert.run({
        requestParams: JSON.stringify(input.requestParams),
        request: JSON.stringify(input.request),
        projectType: input.projectType,
        jobName: input.jobName,
        priority: input.priority,
        stateTimestamps: JSON.stringify({ queued: nowSeconds() }),
      });
      return Number(result.lastInsertRowid);
    },

    get(id: number): BuildRecord | null {
      const row = selectOne.get(id);
      return row ? toRecord(row) : null;
    },

    /** Ascending id, SPEC §1.2. */
    list(offset: number, limit: number): BuildRecord[] {
      return selectPage.all(limit, offset).map(toRecord);
    },

    listUnfinished(): BuildRecord[] {
      return selectByStatus.all().map(toRecord);
    },

    /**
     * Moves the build's status, in SQL only from a status the model's table allows (model/build-status.ts):
     * whatever memory believes, a terminal build never changes again. A refused move throws.
     */
    setStatus(id: number, status: BuildStatus, errorMessage: string | null = null): void {
      const stamp: Record<string, number> = { [status.toLowerCase()]: nowSeconds() };
      if (isTerminal(status)) stamp['finished'] = stamp[status.toLowerCase()]!;
      const from = JSON.stringify(statusesMovingTo(status));
      const result = updateStatus.run({ id, status, errorMessage, timestamps: JSON.stringify(stamp), from });
      if (result.changes === 0) throw new IllegalTransitionError('build status', selectOne.get(id)?.status ?? 'missing', status, `build ${id}`);
    },

    setPrepared(id: number, input: { projectDir: string; job: StoredJob; numAtoms: number; numSubjobs: number }): void {
      updatePrepared.run({
        id,
        projectDir: input.projectDir,
        job: JSON.stringify(input.job),
        jobName: input.job.name,
        numAtoms: input.numAtoms,
        numSubjobs: input.numSubjobs,
      });
    },

    setCompletedSubjobs(id: number, completed: number): void {
      updateCompleted.run(completed, id);
    },

    setArtifactsReady(id: number): void {
      updateArtifacts.run(id);
    },
  };
}

export type BuildStore = ReturnType<typeof createBuildStore>;
