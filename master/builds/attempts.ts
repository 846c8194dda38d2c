import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { StopReason } from '../../shared/process.ts';
import type { AttemptStopReason } from '../store/attempt-store.ts';
import { atomFolderName, CONSOLE_FILE, type ResultsLayout } from './results-layout.ts';

/**
 * The files of an atom's earlier attempts (SPEC §10). The atom's folder under `artifacts/` always holds its
 * last attempt (the archive takes it as it is); before a new attempt clears it, the console output of the
 * one before is kept under `attempts/`, outside the archived folder: `attempts/artifact_<s>_<a>/<n>`.
 */

/** The console file of attempt `attempt` of the atom, when that attempt is not its last. */
export function earlierAttemptConsole(layout: ResultsLayout, buildId: number, subjobId: number, atomId: number, attempt: number): string {
  return join(layout.buildDir(buildId), 'attempts', atomFolderName(subjobId, atomId), String(attempt));
}

/** Where attempt `attempt` of an atom whose last attempt is `lastAttempt` has its console output. */
export function attemptConsolePath(layout: ResultsLayout, buildId: number, subjobId: number, atomId: number,
  attempt: number, lastAttempt: number): string {
  return attempt >= lastAttempt
    ? join(layout.atomDir(buildId, subjobId, atomId), CONSOLE_FILE)
    : earlierAttemptConsole(layout, buildId, subjobId, atomId, attempt);
}

/** Attempt `attempt` starts: the console output of the one before moves aside (nothing to move if it printed nothing). */
export async function keepEarlierConsole(layout: ResultsLayout, buildId: number, subjobId: number, atomId: number, attempt: number): Promise<void> {
  if (attempt <= 1) return;
  const target = earlierAttemptConsole(layout, buildId, subjobId, atomId, attempt - 1);
  await mkdir(join(target, '..'), { recursive: true });
  try {
    await rename(join(layout.atomDir(buildId, subjobId, atomId), CONSOLE_FILE), target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** The worker's reason a command was stopped, in the words of SPEC §10. */
export function attemptStopReason(reason: StopReason | null): AttemptStopReason | null {
  switch (reason) {
    case null: return null;
    case 'timeout': return 'timeout';
    case 'cancel': return 'canceled';
    // The worker stopping (drain timeout, signal) or losing its lease: either way the worker went away from it.
    case 'worker_stop':
    case 'lease_lost': return 'worker_lost';
    default: {
      const unexpected: never = reason;
      return unexpected;
    }
  }
}
