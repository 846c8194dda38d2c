import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase, type Db } from '../../master/store/database.ts';
import { WriteBatcher, type WriteOwner } from '../../master/store/write-batcher.ts';

describe('the store write policy', () => {
  let dir: string;
  let db: Db;

  afterEach(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A real database whose timings table refuses rows of one job, as a failing disk would refuse them. */
  function failingDb(): { batcher: WriteBatcher; failed: { owner: WriteOwner; message: string }[]; logged: WriteOwner[] } {
    dir = mkdtempSync(join(tmpdir(), 'cr-batcher-'));
    db = openDatabase(join(dir, 'master.db'));
    db.exec(`CREATE TRIGGER refuse_doomed BEFORE INSERT ON timings WHEN NEW.job_key = 'doomed'
             BEGIN SELECT RAISE(ABORT, 'the disk refused this row'); END;`);
    const batcher = new WriteBatcher(db);
    const failed: { owner: WriteOwner; message: string }[] = [];
    const logged: WriteOwner[] = [];
    batcher.setFailurePolicy({
      buildWriteFailed: (owner, error) => failed.push({ owner, message: (error as Error).message }),
      logFailure: (owner) => logged.push(owner),
    });
    return { batcher, failed, logged };
  }

  const insert = (jobKey: string) => () =>
    db.prepare('INSERT INTO timings (job_key, atom, seconds, samples, updated_at) VALUES (?, ?, 1, 1, 0)').run(jobKey, `a${Math.random()}`);
  const count = (jobKey: string) => (db.prepare('SELECT count(*) AS n FROM timings WHERE job_key = ?').get(jobKey) as { n: number }).n;

  it('fails only the owner of a failed write; everyone else in the batch is committed', () => {
    const { batcher, failed, logged } = failingDb();
    batcher.add(insert('kept'), 1);
    batcher.add(insert('doomed'), 2);
    batcher.add(insert('doomed'), 2);
    batcher.add(insert('kept'), null);
    batcher.add(insert('kept'), 3);
    expect(() => batcher.flush()).not.toThrow();
    expect(count('kept')).toBe(3);
    expect(count('doomed')).toBe(0);
    expect(failed).toEqual([{ owner: 2, message: 'the disk refused this row' }]);
    expect(logged).toEqual([2]);
  });

  it('reports each owner once, however many of its writes fail later', () => {
    const { batcher, failed, logged } = failingDb();
    batcher.add(insert('doomed'), 2);
    batcher.flush();
    batcher.add(insert('doomed'), 2);
    batcher.add(insert('doomed'), null);
    batcher.flush();
    batcher.add(insert('doomed'), null);
    batcher.flush();
    expect(failed.map((f) => f.owner)).toEqual([2]);
    expect(logged).toEqual([2, null]);
  });

  it('never throws from the scheduled flush, and tells listeners only of committed writes', async () => {
    const { batcher, failed } = failingDb();
    const announced: string[] = [];
    batcher.add(() => {
      insert('kept')();
      return () => announced.push('kept');
    }, 1);
    batcher.add(() => {
      insert('doomed')();
      return () => announced.push('doomed');
    }, 2);
    // The flush runs from setImmediate: a throw there would kill the process (and fail this test run).
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(announced).toEqual(['kept']);
    expect(failed.map((f) => f.owner)).toEqual([2]);
  });

  it('fails every owner of the batch when the database refuses every write (read-only)', () => {
    const { batcher, failed } = failingDb();
    db.pragma('query_only = ON');
    batcher.add(insert('kept'), 1);
    batcher.add(insert('kept'), null);
    batcher.add(insert('kept'), 4);
    expect(() => batcher.flush()).not.toThrow();
    expect(failed.map((f) => f.owner).sort()).toEqual([1, 4]);
    db.pragma('query_only = OFF');
    expect(count('kept')).toBe(0);
  });
});
