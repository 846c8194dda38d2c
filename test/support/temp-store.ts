/**
 * Stores on real SQLite files in temp folders for unit tests: each test file calls
 * `afterEach(closeTempStores)`, which closes every store opened since and removes its folder.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { openStore, type Store } from '../../master/store/index.ts';

const opened: { store: Store; dir: string }[] = [];

/** A new store in a new temp folder; with `path`, the store at that file again (its folder from an earlier call). */
export function openTempStore(prefix: string, path?: string): { store: Store; path: string } {
  const file = path ?? join(mkdtempSync(join(tmpdir(), prefix)), 'master.sqlite');
  const store = openStore(file);
  opened.push({ store, dir: dirname(file) });
  return { store, path: file };
}

export function closeTempStores(): void {
  for (const { store, dir } of opened.splice(0)) {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
