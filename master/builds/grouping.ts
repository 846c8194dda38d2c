import type { AtomValue } from './atomize.ts';
import type { PlannedSubjob } from '../store/atom-store.ts';

/**
 * Atoms into subjobs. With no timing history for the job every atom is its own subjob, in atomizer order,
 * so subjob ids are 0…n-1 and the first run's artifact folders are `artifact_<i>_0` (SPEC §4).
 */
export function groupAtoms(atoms: readonly AtomValue[]): PlannedSubjob[] {
  return atoms.map((atom, index) => ({
    id: index,
    atoms: [{ id: 0, variable: atom.variable, value: atom.value, expectedTime: null }],
  }));
}
