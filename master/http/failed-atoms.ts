import type { Store } from '../store/index.ts';
import type { AtomRecord } from '../store/atom-store.ts';

/** The most failed atoms one build's own view shows (lists show MAX_LISTED_FAILED_ATOMS, 100); num_failed_atoms counts all. */
export const MAX_SHOWN_FAILED_ATOMS = 1_000;

/**
 * A build's first failed atoms by (subjob, atom), for the build's own view: bounded so a build with 50,000
 * failed atoms answers in kilobytes, not 9 MB (issue 10 item 3). Ids from one indexed query, then one point
 * lookup per atom shown.
 */
type FailedAtomsView = (buildId: number) => { atoms: AtomRecord[]; total: number };
const views = new WeakMap<Store, FailedAtomsView>();

export function createFailedAtomsView(store: Store): FailedAtomsView {
  const known = views.get(store);
  if (known) return known;
  const selectIds = store.db.prepare<[number, number], { subjob_id: number; id: number }>(
    'SELECT subjob_id, id FROM atoms WHERE build_id = ? AND exit_code IS NOT NULL AND exit_code != 0 ORDER BY subjob_id, id LIMIT ?',
  );
  const count = store.db.prepare<[number], { total: number }>(
    'SELECT count(*) AS total FROM atoms WHERE build_id = ? AND exit_code IS NOT NULL AND exit_code != 0',
  );
  const view: FailedAtomsView = (buildId) => {
    const ids = selectIds.all(buildId, MAX_SHOWN_FAILED_ATOMS);
    const atoms = ids.flatMap((row) => store.atoms.getAtom(buildId, row.subjob_id, row.id) ?? []);
    const total = ids.length < MAX_SHOWN_FAILED_ATOMS ? ids.length : count.get(buildId)!.total;
    return { atoms, total };
  };
  views.set(store, view);
  return view;
}
