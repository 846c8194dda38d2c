import type { Store } from '../store/index.ts';
import { transitionBuildStatus, type BuildStatus } from '../model/build-status.ts';
import type { BuildRun } from './build-run.ts';

/**
 * The one way a live build's status changes: the model's table checks the move (it throws on an illegal
 * one), SQLite checks it again, and memory follows the record.
 */
export function moveBuildStatus(store: Store, run: BuildRun, to: BuildStatus, errorText: string | null = null): void {
  transitionBuildStatus(run.id, run.status, to);
  store.builds.setStatus(run.id, to, errorText);
  run.status = to;
}
