import { atomCommandString } from '../../shared/job-config.ts';
import type { Db } from '../store/database.ts';
import { normaliseFileKey, testStoreOf } from './test-store.ts';

/**
 * Where a job's atoms are test files (`export TEST_FILE="tests/test_api.py";`), a new file has no timing
 * history, but its tests may have run before, in another atom or another job layout: their seconds from
 * the reports (test-store.ts `test_file_times`) estimate it. The atom's own history, when it has one,
 * always wins.
 *
 * An atom value matches a recorded key when, after normalising (`./` and `$PROJECT_DIR/` dropped), one
 * ends with the other at a path boundary (`tests/a.test.ts` and `a.test.ts`), or as a Python module
 * (`tests/unit/test_x.py` and pytest's class name `tests.unit.test_x`).
 */
export function withTestFileEstimates(db: Db, jobKey: string, atoms: readonly { readonly variable: string; readonly value: string }[],
  history: ReadonlyMap<string, number>): Map<string, number> {
  const merged = new Map(history);
  const missing = atoms.filter((atom) => !history.has(atomCommandString(atom.variable, atom.value)));
  if (missing.length === 0) return merged;
  const times = testStoreOf(db).fileTimes(jobKey);
  if (times.size === 0) return merged;
  // Keys by their last segment, so each atom looks at a handful of keys, not all of them.
  const byTail = new Map<string, string[]>();
  for (const key of times.keys()) {
    const tail = lastSegment(key);
    byTail.set(tail, [...(byTail.get(tail) ?? []), key]);
  }
  for (const atom of missing) {
    const seconds = estimateFile(atom.value, times, byTail);
    if (seconds !== null) merged.set(atomCommandString(atom.variable, atom.value), seconds);
  }
  return merged;
}

function estimateFile(value: string, times: ReadonlyMap<string, number>, byTail: ReadonlyMap<string, readonly string[]>): number | null {
  const path = normaliseFileKey(value.trim());
  const module = path.endsWith('.py') ? path.slice(0, -3).split('/').join('.') : null;
  for (const candidate of module === null ? [path] : [path, module]) {
    const exact = times.get(candidate);
    if (exact !== undefined) return exact;
    for (const key of byTail.get(lastSegment(candidate)) ?? []) {
      if (isSuffixAtBoundary(key, candidate) || isSuffixAtBoundary(candidate, key)) return times.get(key)!;
    }
  }
  return null;
}

function lastSegment(key: string): string {
  const slash = key.lastIndexOf('/');
  const afterSlash = key.slice(slash + 1);
  // A dotted module's last part, but a file name keeps its extension.
  return key.includes('/') || /\.[a-z]{1,5}$/i.test(key) ? afterSlash : afterSlash.slice(afterSlash.lastIndexOf('.') + 1);
}

function isSuffixAtBoundary(long: string, short: string): boolean {
  if (!long.endsWith(short) || long.length === short.length) return long === short;
  const before = long[long.length - short.length - 1];
  return before === '/' || before === '.';
}
