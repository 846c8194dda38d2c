import type { Db } from './database.ts';
import { NONCE_KEEP_MS, NonceCache, type NonceBook } from '../../shared/auth.ts';

/** Old nonces are deleted at most this often: one DELETE per request would double the writes. */
const SWEEP_INTERVAL_MS = 10_000;

/**
 * The nonces of accepted signed requests, kept in SQLite for their window (issue 10, item 13): a signed
 * POST captured before a restart is still refused after it. Memory stays bounded: the in-memory cache in
 * front only spares a database lookup for a replay seen recently, and evicts by age and size; the table
 * is authoritative and loses rows only by age, so no flood can push a live nonce out of it. Its size is
 * bounded by the request rate times NONCE_KEEP_MS (10 minutes), each row at most a 128-byte nonce.
 *
 * Its own table, created here rather than by a numbered migration: it holds nothing that outlives ten
 * minutes, so it needs no schema history, and an older master opening the file simply ignores it.
 */
export function createNonceStore(db: Db, options: { memoryEntries?: number } = {}): NonceBook {
  db.exec('CREATE TABLE IF NOT EXISTS request_nonces (nonce TEXT PRIMARY KEY, seen_ms INTEGER NOT NULL) WITHOUT ROWID');
  db.exec('CREATE INDEX IF NOT EXISTS request_nonces_by_age ON request_nonces (seen_ms)');
  const insert = db.prepare('INSERT OR IGNORE INTO request_nonces (nonce, seen_ms) VALUES (?, ?)');
  const sweep = db.prepare('DELETE FROM request_nonces WHERE seen_ms < ?');
  const recent = new NonceCache(options.memoryEntries ?? 10_000);
  let lastSweepMs = 0;
  return {
    remember(nonce, nowMs) {
      if (nowMs - lastSweepMs >= SWEEP_INTERVAL_MS) {
        lastSweepMs = nowMs;
        sweep.run(nowMs - NONCE_KEEP_MS);
      }
      if (!recent.remember(nonce, nowMs)) return false;
      // A row older than the window that the sweep has not reached yet still refuses: its request has
      // expired anyway, so verifyRequest never gets here for it.
      return insert.run(nonce, nowMs).changes === 1;
    },
  };
}
