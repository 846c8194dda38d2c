/**
 * WAL checkpoints on a thread of their own (master/store/checkpointer.ts, issue 18), on a real SQLite file:
 * the main connection stops checkpointing once the thread is up, the thread copies the WAL into the database
 * file, every row is there after a reopen, and a thread that cannot start leaves checkpoints to the main one.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../master/store/index.ts';
import { openDatabase } from '../../master/store/database.ts';
import { startCheckpointer } from '../../master/store/checkpointer.ts';

const dirs: string[] = [];
const stores: Store[] = [];
afterEach(() => {
  for (const store of stores.splice(0)) store.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cr-checkpoint-'));
  dirs.push(dir);
  return join(dir, 'master.sqlite');
}

async function until(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('the WAL checkpointer', () => {
  it('takes checkpoints off the main connection and copies the WAL into the database file', async () => {
    const path = tempDb();
    const store = openStore(path);
    stores.push(store);
    await until(() => store.checkpointer!.isActive, 'the checkpoint thread');
    expect(store.db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
    store.db.exec('CREATE TABLE filler (id INTEGER PRIMARY KEY, text TEXT NOT NULL)');
    const insert = store.db.prepare('INSERT INTO filler (text) VALUES (?)');
    const sizeBefore = statSync(path).size;
    for (let batch = 0; batch < 20; batch++) store.db.transaction(() => {
      for (let i = 0; i < 500; i++) insert.run('x'.repeat(200));
    })();
    await until(() => store.checkpointer!.checkpoints > 0 && statSync(path).size > sizeBefore + 1_000_000, 'a checkpoint by the thread');
    store.close();
    const reopened = openDatabase(path);
    expect(reopened.prepare('SELECT count(*) AS n FROM filler').get()).toEqual({ n: 10_000 });
    reopened.close();
  });

  it('leaves checkpoints to the main connection when the thread cannot open the database', async () => {
    const db = openDatabase(':memory:');
    const checkpointer = startCheckpointer(db, join(tempDb(), 'missing', 'master.sqlite'), 50);
    await until(() => checkpointer.hasEnded, 'the thread to end');
    expect(checkpointer.isActive).toBe(false);
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(1000);
    db.close();
  });
});
