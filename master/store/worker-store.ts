import type { Db } from './database.ts';

/** Worker ids come from SQLite so they never repeat, not even across master restarts. */
export function createWorkerStore(db: Db) {
  const insert = db.prepare('INSERT INTO workers (name, session_id, first_seen, last_seen) VALUES (?, ?, ?, ?)');
  const touch = db.prepare('UPDATE workers SET last_seen = ? WHERE id = ?');
  const same = db.prepare('SELECT 1 FROM workers WHERE id = ? AND name = ? AND session_id = ?');
  const suspicion = db.prepare<[string], string>('SELECT reason FROM worker_suspicions WHERE name = ?').pluck();
  const suspect = db.prepare(`INSERT INTO worker_suspicions (name, reason, since) VALUES (?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET reason = excluded.reason, since = excluded.since`);
  const clearSuspicion = db.prepare('DELETE FROM worker_suspicions WHERE name = ?');
  return {
    insert(name: string, sessionId: string): number {
      const now = Date.now() / 1000;
      return Number(insert.run(name, sessionId, now, now).lastInsertRowid);
    },
    /** This id was given to a worker of this name and session: a reconnection of the same process. */
    isSameWorker(id: number, name: string, sessionId: string): boolean {
      return same.get(id, name, sessionId) !== undefined;
    },
    touch(id: number): void {
      touch.run(Date.now() / 1000, id);
    },
    /** Why a worker of this name is suspect (SPEC §15), or null. */
    suspicionOf(name: string): string | null {
      return suspicion.get(name) ?? null;
    },
    /** Records a worker's suspicion (a reason), or clears it (null). */
    setSuspicion(name: string, reason: string | null): void {
      if (reason === null) clearSuspicion.run(name);
      else suspect.run(name, reason, Date.now() / 1000);
    },
  };
}

export type WorkerStore = ReturnType<typeof createWorkerStore>;
