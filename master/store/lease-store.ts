import type { Db } from './database.ts';
import type { WriteBatcher } from './write-batcher.ts';

/** A lease as SQLite keeps it: enough for a restarted master to recognise it when its worker comes back. */
export interface StoredLease {
  readonly id: string;
  readonly buildId: number;
  readonly subjobId: number;
  readonly workerName: string;
  readonly sessionId: string;
  readonly executorIndex: number;
  readonly buildExecutorIndex: number;
  readonly atomIds: readonly number[];
}

interface LeaseRow {
  id: string;
  build_id: number;
  subjob_id: number;
  worker_name: string;
  session_id: string;
  executor_index: number;
  build_executor_index: number;
  atom_ids: string;
}

/** Live leases; every write rides in the batched transaction of the dispatch or result it comes with. */
export function createLeaseStore(db: Db, batcher: WriteBatcher) {
  const insert = db.prepare(
    `INSERT OR REPLACE INTO leases (id, build_id, subjob_id, worker_name, session_id, executor_index, build_executor_index, atom_ids)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const remove = db.prepare('DELETE FROM leases WHERE id = ?');
  const removeBuild = db.prepare('DELETE FROM leases WHERE build_id = ?');
  const selectBuild = db.prepare<[number], LeaseRow>('SELECT * FROM leases WHERE build_id = ?');
  return {
    add(lease: StoredLease): void {
      batcher.add(() => insert.run(lease.id, lease.buildId, lease.subjobId, lease.workerName, lease.sessionId,
        lease.executorIndex, lease.buildExecutorIndex, JSON.stringify(lease.atomIds)), lease.buildId);
    },
    remove(id: string): void {
      batcher.add(() => remove.run(id));
    },
    removeBuild(buildId: number): void {
      batcher.add(() => removeBuild.run(buildId), buildId);
    },
    listBuild(buildId: number): StoredLease[] {
      batcher.flush();
      return selectBuild.all(buildId).map((row) => ({
        id: row.id,
        buildId: row.build_id,
        subjobId: row.subjob_id,
        workerName: row.worker_name,
        sessionId: row.session_id,
        executorIndex: row.executor_index,
        buildExecutorIndex: row.build_executor_index,
        atomIds: JSON.parse(row.atom_ids) as number[],
      }));
    },
  };
}

export type LeaseStore = ReturnType<typeof createLeaseStore>;
