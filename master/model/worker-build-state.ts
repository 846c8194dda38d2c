import { checkTransition, type TransitionTable } from './illegal-transition.ts';

/**
 * A worker's relation to one build. absent: nothing of the build there (never set up, or torn down, or the
 * worker was lost). setting_up -> ready (setup ok) | failed (setup failed) | tearing_down (the build ended
 * meanwhile: cancel_build) | absent (it ended and setup failed anyway). ready -> tearing_down. A worker's
 * registration says which builds it has set up (issue 15), so absent may go straight to ready (it still has
 * the setup), setting_up (its setup still runs) or tearing_down (it has a build the master is done with).
 */
export const WORKER_BUILD_STATES = ['absent', 'setting_up', 'ready', 'tearing_down', 'failed'] as const;
export type WorkerBuildStep = (typeof WORKER_BUILD_STATES)[number];
/** The states a worker keeps a record of (absent is no entry). */
export type WorkerBuildState = Exclude<WorkerBuildStep, 'absent'>;

export const WORKER_BUILD_MOVES: TransitionTable<WorkerBuildStep> = {
  absent: ['setting_up', 'ready', 'tearing_down'],
  setting_up: ['ready', 'failed', 'tearing_down', 'absent'],
  ready: ['tearing_down', 'absent'],
  tearing_down: ['absent'],
  failed: ['absent'],
};

export function transitionWorkerBuild(subject: string, from: WorkerBuildStep, to: WorkerBuildStep): WorkerBuildStep {
  return checkTransition('worker build state', WORKER_BUILD_MOVES, from, to, subject);
}
