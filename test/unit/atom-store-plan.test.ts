/**
 * A build's plan written to a real SQLite file (atom-store insertPlan: many rows per INSERT, issue 18): every
 * subjob and atom comes back in order with its values, across full statements and the remainder; and
 * hasExpectedTimes tells a plan made with history from one without; the sums an ETA reads; and the atoms read
 * a page at a time (the finisher, issue 18) come in the same order as all at once, and the running ones alone
 * (an event stream following console output) as the whole build's filtered, and a page of subjobs with its atoms
 * (GET …/subjobs) as the whole build's sliced.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Store } from '../../master/store/index.ts';
import { closeTempStores, openTempStore } from '../support/temp-store.ts';
import type { PlannedSubjob } from '../../master/store/atom-store.ts';

afterEach(closeTempStores);

function newBuild(): { store: Store; buildId: number } {
  const { store } = openTempStore('cr-plan-');
  const buildId = store.builds.insert({
    requestParams: { type: 'directory', project_directory: '/tmp/project' }, request: { type: 'directory' },
    projectType: 'directory', jobName: 'plan', priority: 0,
  });
  return { store, buildId };
}

/** 451 subjobs of 1 to 3 atoms: more than two full statements of each table and a remainder. */
function plan(expectedTime: (subjobId: number) => number | null): PlannedSubjob[] {
  return Array.from({ length: 451 }, (_, id) => ({
    id,
    atoms: Array.from({ length: 1 + (id % 3) }, (_, atomId) => ({
      id: atomId, variable: 'TEST_FILE', value: `tests/test_${id}_${atomId}.py 'quoted' "and" $dollar`, expectedTime: expectedTime(id),
    })),
  }));
}

describe('a build plan in SQLite', () => {
  it('keeps every subjob and atom, in order, with its value and expected time', () => {
    const { store, buildId } = newBuild();
    const subjobs = plan((id) => (id % 2 === 0 ? id / 10 : null));
    store.db.transaction(() => store.atoms.insertPlan(buildId, subjobs))();
    expect(store.atoms.listSubjobs(buildId).map((subjob) => [subjob.id, subjob.state])).toEqual(subjobs.map((subjob) => [subjob.id, 'NOT_STARTED']));
    expect(store.atoms.listBuildAtoms(buildId).map((atom) => [atom.subjobId, atom.id, atom.variable, atom.value, atom.expectedTime, atom.state]))
      .toEqual(subjobs.flatMap((subjob) => subjob.atoms.map((atom) => [subjob.id, atom.id, atom.variable, atom.value, atom.expectedTime, 'NOT_STARTED'])));
    expect(store.atoms.hasExpectedTimes(buildId)).toBe(true);
  });

  it('writes an empty plan and a plan of one atom, and knows a plan without history', () => {
    const { store, buildId } = newBuild();
    store.db.transaction(() => store.atoms.insertPlan(buildId, []))();
    expect(store.atoms.listBuildAtoms(buildId)).toEqual([]);
    store.db.transaction(() => store.atoms.insertPlan(buildId, [{ id: 0, atoms: [{ id: 0, variable: 'N', value: '1', expectedTime: null }] }]))();
    expect(store.atoms.listBuildAtoms(buildId).map((atom) => atom.value)).toEqual(['1']);
    expect(store.atoms.hasExpectedTimes(buildId)).toBe(false);
  });

  // The running build's ETA reads these sums instead of every atom (issue 18).
  it('sums the expected seconds of the atoms still to finish, per subjob, as the atoms themselves add up', () => {
    const { store, buildId } = newBuild();
    const subjobs = plan((id) => (id % 3 === 0 ? null : id / 7));
    store.db.transaction(() => store.atoms.insertPlan(buildId, subjobs))();
    for (const subjob of subjobs.filter((planned) => planned.id % 4 === 0)) {
      for (const atom of subjob.atoms.slice(0, 1)) store.atoms.markFinished(buildId, subjob.id, atom.id, 0, 1.5, null);
      store.atoms.setSubjobState(buildId, subjob.id, 'COMPLETED');
    }
    const atoms = store.atoms.listBuildAtoms(buildId);
    const expected = new Map<number, { subjobId: number; seconds: number; numAtoms: number; unknown: number }>();
    for (const atom of atoms.filter((each) => each.state !== 'COMPLETED')) {
      const entry = expected.get(atom.subjobId) ?? { subjobId: atom.subjobId, seconds: 0, numAtoms: 0, unknown: 0 };
      entry.seconds += atom.expectedTime ?? 0;
      entry.numAtoms += 1;
      entry.unknown += atom.expectedTime === null ? 1 : 0;
      expected.set(atom.subjobId, entry);
    }
    expect(expected.size).toBeLessThan(subjobs.length);
    expect(store.atoms.remainingBySubjob(buildId)).toEqual([...expected.values()]);
    const known = atoms.flatMap((atom) => (atom.expectedTime === null ? [] : [atom.expectedTime]));
    const stats = store.atoms.expectedTimeStats(buildId);
    expect(stats.known).toBe(known.length);
    expect(stats.mean).toBeCloseTo(known.reduce((sum, time) => sum + time, 0) / known.length, 9);
  });

  it('reads the atoms of a build a page at a time, in the same order as all at once, those running alone, and a page of subjobs', () => {
    const { store, buildId } = newBuild();
    store.atoms.insertPlan(buildId, plan(() => null));
    const other = store.builds.insert({
      requestParams: { type: 'directory', project_directory: '/tmp/project' }, request: { type: 'directory' },
      projectType: 'directory', jobName: 'plan', priority: 0,
    });
    store.atoms.insertPlan(other, plan(() => 1));
    const all = store.atoms.listBuildAtoms(buildId);
    for (const limit of [1, 7, 100, all.length, all.length + 1]) {
      const paged: typeof all = [];
      for (;;) {
        const last = paged.at(-1);
        const page = store.atoms.listBuildAtomsAfter(buildId, last === undefined ? null : { subjobId: last.subjobId, atomId: last.id }, limit);
        expect(page.length).toBeLessThanOrEqual(limit);
        if (page.length === 0) break;
        paged.push(...page);
      }
      expect(paged).toEqual(all);
    }
    for (const atom of all.filter((_, index) => index % 97 === 5)) store.atoms.markStarted(buildId, atom.subjobId, atom.id, 'worker-1');
    const running = store.atoms.listBuildAtoms(buildId).filter((atom) => atom.state === 'IN_PROGRESS');
    expect(running.length).toBeGreaterThan(3);
    expect(store.atoms.listInProgressAtoms(buildId)).toEqual(running);

    // A page of subjobs, and the atoms of a range of them, as the whole build's sliced.
    const subjobs = store.atoms.listSubjobs(buildId);
    const atomsNow = store.atoms.listBuildAtoms(buildId);
    for (const [offset, limit] of [[0, 10], [440, 100], [451, 5], [3, 0]] as const) {
      const page = store.atoms.listSubjobsPage(buildId, offset, limit);
      expect(page).toEqual(subjobs.slice(offset, offset + limit));
      if (page.length === 0) continue;
      const ids = new Set(page.map((subjob) => subjob.id));
      expect(store.atoms.listSubjobRangeAtoms(buildId, page[0]!.id, page.at(-1)!.id)).toEqual(atomsNow.filter((atom) => ids.has(atom.subjobId)));
    }
  });
});
