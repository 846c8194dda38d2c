import type { Db } from './database.ts';
import type { WriteBatcher, WriteOwner } from './write-batcher.ts';

/**
 * How much a new duration moves an atom's expected time. Recent runs matter most (tests get slower or
 * faster as code changes), but one noisy run should not swing the plan of the next build.
 */
const NEW_SAMPLE_WEIGHT = 0.5;

/** Timing history: per job (directory or repository, and job name) and atom string, the expected seconds. */
export function createTimingStore(db: Db, batcher: WriteBatcher) {
  const selectJob = db.prepare<[string], { atom: string; seconds: number }>('SELECT atom, seconds FROM timings WHERE job_key = ?');
  const upsert = db.prepare(
    `INSERT INTO timings (job_key, atom, seconds, samples, updated_at) VALUES (@jobKey, @atom, @seconds, 1, @now)
     ON CONFLICT (job_key, atom) DO UPDATE SET
       seconds = seconds * (1 - @weight) + excluded.seconds * @weight,
       samples = samples + 1,
       updated_at = excluded.updated_at`,
  );
  return {
    /** Every known atom of the job; read once per build, when it is planned. */
    loadJob(jobKey: string): Map<string, number> {
      batcher.flush();
      return new Map(selectJob.all(jobKey).map((row) => [row.atom, row.seconds]));
    },
    /** Rides in the batched transaction of the result it comes with. */
    record(jobKey: string, atom: string, seconds: number, owner: WriteOwner = null): void {
      batcher.add(() => upsert.run({ jobKey, atom, seconds, now: Date.now() / 1000, weight: NEW_SAMPLE_WEIGHT }), owner);
    },
  };
}

export type TimingStore = ReturnType<typeof createTimingStore>;
