import { checkTransition, type TransitionTable } from './illegal-transition.ts';

/**
 * A worker's relation to one build. absent: nothing of the build there (never set up, or torn down, or the
 * worker was lost). setting_up -> ready (setup ok) | failed (setup failed) | tearing_down (the build ended
 * meanwhile: cancel_build) | absent (it ended and setup failed anyway). ready -> tearing_down. A lease
 * resumed after a master restart comes back as ready straight from absent: the worker still has the setup.
 */
export const WORKER_BUILD_STATES = ['absent', 'setting_up', 'ready', 'tearing_down', 'failed'] as const;
export type WorkerBuildStep = (typeof WORKER_BUILD_STATES)[number];
/** The states a worker keeps a record of (absent is no entry). */
export type WorkerBuildState = Exclude<WorkerBuildStep, 'absent'>;

export const WORKER_BUILD_MOVES: TransitionTable<WorkerBuildStep> = {
  absent: ['setting_up', 'ready'],
  setting_up: ['ready', 'failed', 'tearing_down', 'absent'],
  ready: ['tearing_down', 'absent'],
  tearing_down: ['absent'],
  failed: ['absent'],
};

export function transitionWorkerBuild(subject: string, from: WorkerBuildStep, to: WorkerBuildStep): WorkerBuildStep {
  return checkTransition('worker build state', WORKER_BUILD_MOVES, from, to, subject);
}
