import { ClusterRunnerError } from '../../shared/errors.ts';

/**
 * A state machine was asked for a move its table does not allow. Always a bug in the master (or a race it
 * must lose safely): the move is refused rather than recorded, so a terminal build can never come back.
 */
export class IllegalTransitionError extends ClusterRunnerError {
  readonly machine: string;
  readonly from: string;
  readonly to: string;

  constructor(machine: string, from: string, to: string, subject: string) {
    super('ILLEGAL_TRANSITION', `${subject}: ${machine} cannot move from ${from} to ${to}`, { status: 409 });
    this.name = 'IllegalTransitionError';
    this.machine = machine;
    this.from = from;
    this.to = to;
  }
}

/** One transition table: the moves each state allows. */
export type TransitionTable<S extends string> = Readonly<Record<S, readonly S[]>>;

/** The one check every machine shares: returns `to`, or throws when the table has no such move. */
export function checkTransition<S extends string>(machine: string, table: TransitionTable<S>, from: S, to: S, subject: string): S {
  if (!table[from].includes(to)) throw new IllegalTransitionError(machine, from, to, subject);
  return to;
}
