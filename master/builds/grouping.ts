import { atomCommandString } from '../../shared/job-config.ts';
import type { AtomValue } from './atomize.ts';
import type { PlannedSubjob } from '../store/atom-store.ts';

export interface GroupingOptions {
  /** Executors the build is expected to get (>= 1): all live executors, capped by max_executors. */
  readonly executors: number;
  /**
   * Seconds: atoms are grouped until a subjob is at least this long, so the fixed cost of a subjob (dispatch,
   * reporting, a few file writes: tens of ms) stays a small share of it. Default 2.
   */
  readonly minSubjobS?: number;
}

const DEFAULT_MIN_SUBJOB_S = 2;
/**
 * However short its atoms, a subjob stays one modest message (each atom's value travels twice in
 * run_subjob, and frames are capped at 4 MiB) and one short lease: a worker lost mid-subjob reruns at most this.
 */
export const MAX_ATOMS_PER_SUBJOB = 200;
const MAX_SUBJOB_VALUE_CHARS = 1024 * 1024;

/**
 * Atoms into subjobs (SPEC §4). Without timing history every atom is its own subjob, in atomizer order, so
 * subjob ids are 0…n-1 and the first run's artifact folders are `artifact_<i>_0`.
 *
 * With history, atoms are taken longest first (short ones in atomizer order) and packed by guided self-scheduling: the next subjob aims at
 * max(minSubjobS, remaining work / (2 × executors)). Early subjobs are long (few dispatches), later ones
 * shrink towards the end (in the last rounds below minSubjobS), and an atom longer than the aim is a subjob
 * alone. Dispatch is dynamic (a free
 * executor takes the next subjob), so this order gives every executor work until the last seconds, and the
 * shrinking tail evens out the finish even when estimates are off. Subjob ids follow that order.
 *
 * history maps atom strings (`export VAR="value";`) to expected seconds.
 */
export function groupAtoms(atoms: readonly AtomValue[], history?: ReadonlyMap<string, number>, options?: GroupingOptions): PlannedSubjob[] {
  // No history at all (a cold start): no atom string to build for each of 100,000 atoms.
  const known = history === undefined || history.size === 0 ? [] : atoms.map((atom) => history.get(atomCommandString(atom.variable, atom.value)));
  const knownTimes = known.filter((time): time is number => time !== undefined && Number.isFinite(time) && time >= 0);
  if (knownTimes.length === 0) {
    return atoms.map((atom, index) => ({
      id: index,
      atoms: [{ id: 0, variable: atom.variable, value: atom.value, expectedTime: null }],
    }));
  }
  // An atom never seen before is probably like the others of its job: the median, not the worst case.
  const fallback = median(knownTimes);
  const estimates = known.map((time) => (time !== undefined && Number.isFinite(time) && time >= 0 ? time : fallback));
  // Longest first; atoms short enough to be packed with others (under a quarter of minSubjobS) count as
  // equal and keep atomizer order: their order changes nothing for balance, and measured times jitter from
  // build to build, which would otherwise shuffle which atom lands in artifact_0_0.
  const minSubjobS = options?.minSubjobS ?? DEFAULT_MIN_SUBJOB_S;
  const sortKey = estimates.map((time) => (time < minSubjobS / 4 ? 0 : time));
  const order = atoms.map((_, index) => index).sort((a, b) => sortKey[b]! - sortKey[a]! || a - b);

  const executors = Math.max(1, Math.floor(options?.executors ?? 1));
  let remaining = estimates.reduce((sum, time) => sum + time, 0);
  const subjobs: PlannedSubjob[] = [];
  let next = 0;
  let isLastRounds = false;
  while (next < order.length) {
    // In the last rounds (less than two subjobs of the minimum left per executor, with atoms enough to go
    // round) pieces may shrink further: there an even finish is worth more than a few extra subjobs.
    isLastRounds ||= remaining < 2 * executors * minSubjobS && order.length - next >= executors;
    const floor = isLastRounds ? minSubjobS / 4 : minSubjobS;
    const aim = Math.max(floor, remaining / (2 * executors));
    const members = [order[next++]!];
    let size = estimates[members[0]!]!;
    let chars = atoms[members[0]!]!.value.length;
    while (next < order.length && size + estimates[order[next]!]! <= aim && members.length < MAX_ATOMS_PER_SUBJOB &&
      chars + atoms[order[next]!]!.value.length <= MAX_SUBJOB_VALUE_CHARS) {
      size += estimates[order[next]!]!;
      chars += atoms[order[next]!]!.value.length;
      members.push(order[next++]!);
    }
    remaining -= size;
    // Inside one subjob the order changes nothing for balance (one executor runs them all), so atoms keep
    // their atomizer order there: artifact folders and console output read as the user wrote the job.
    members.sort((a, b) => a - b);
    subjobs.push({
      id: subjobs.length,
      atoms: members.map((index, atomId) => ({
        id: atomId,
        variable: atoms[index]!.variable,
        value: atoms[index]!.value,
        expectedTime: estimates[index]!,
      })),
    });
  }
  return subjobs;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
