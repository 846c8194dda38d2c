import { checkTransition, type TransitionTable } from './illegal-transition.ts';

/**
 * A live build's phase on the master: preparing (not dispatchable yet) -> ready (dispatchable) ->
 * finishing (no more dispatch; being archived, canceled or errored). Preparing may end at once (an error,
 * a cancel, zero atoms). Finishing is final: the run leaves memory when it is done.
 */
export const RUN_PHASES = ['preparing', 'ready', 'finishing'] as const;
export type RunPhase = (typeof RUN_PHASES)[number];

export const RUN_PHASE_MOVES: TransitionTable<RunPhase> = {
  preparing: ['ready', 'finishing'],
  ready: ['finishing'],
  finishing: [],
};

export function transitionRunPhase(buildId: number, from: RunPhase, to: RunPhase): RunPhase {
  return checkTransition('run phase', RUN_PHASE_MOVES, from, to, `build ${buildId}`);
}
