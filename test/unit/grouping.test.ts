import { describe, expect, it } from 'vitest';
import { groupAtoms, MAX_ATOMS_PER_SUBJOB } from '../../master/builds/grouping.ts';
import type { PlannedSubjob } from '../../master/store/atom-store.ts';

const atom = (value: string) => ({ variable: 'X', value });
const key = (value: string) => `export X="${value}";`;
const names = (plan: PlannedSubjob[]) => plan.map((subjob) => subjob.atoms.map((a) => a.value));

/** Seeded uniform numbers, so the simulations are the same on every run. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** A dynamic dispatcher: each free executor takes the next subjob; each subjob costs its atoms plus overhead. */
function makespan(plan: PlannedSubjob[], truth: ReadonlyMap<string, number>, executors: number, overheadS = 0.05): number {
  const free = Array.from({ length: executors }, () => 0);
  for (const subjob of plan) {
    const at = free.indexOf(Math.min(...free));
    free[at]! += overheadS + subjob.atoms.reduce((sum, a) => sum + truth.get(a.value)!, 0);
  }
  return Math.max(...free);
}

function invariants(plan: PlannedSubjob[], count: number): void {
  expect(plan.map((subjob) => subjob.id)).toEqual(plan.map((_, index) => index));
  for (const subjob of plan) {
    expect(subjob.atoms.length).toBeGreaterThan(0);
    expect(subjob.atoms.map((a) => a.id)).toEqual(subjob.atoms.map((_, index) => index));
  }
  const values = plan.flatMap((subjob) => subjob.atoms.map((a) => a.value));
  expect(values).toHaveLength(count);
  expect(new Set(values).size).toBe(count);
}

describe('grouping atoms into subjobs', () => {
  it('keeps one atom per subjob in atomizer order without history (SPEC §4)', () => {
    const atoms = ['c', 'a', 'b'].map(atom);
    for (const plan of [groupAtoms(atoms), groupAtoms(atoms, new Map(), { executors: 4 }), groupAtoms(atoms, new Map([[key('z'), 3]]), { executors: 4 })]) {
      expect(plan).toEqual([
        { id: 0, atoms: [{ id: 0, variable: 'X', value: 'c', expectedTime: null }] },
        { id: 1, atoms: [{ id: 0, variable: 'X', value: 'a', expectedTime: null }] },
        { id: 2, atoms: [{ id: 0, variable: 'X', value: 'b', expectedTime: null }] },
      ]);
    }
  });

  it('gives long atoms subjobs of their own and fills short ones in behind (the issue\'s example)', () => {
    const history = new Map([[key('a1'), 100], [key('a2'), 100], [key('a3'), 50], [key('a4'), 2], [key('a5'), 2]]);
    const plan = groupAtoms(['a4', 'a1', 'a5', 'a3', 'a2'].map(atom), history, { executors: 3, minSubjobS: 5 });
    expect(names(plan)).toEqual([['a1'], ['a2'], ['a3'], ['a4', 'a5']]);
    // On 3 executors: a1 and a2 run alone; a3 and then a4+a5 share the third: all done at 100 s.
    expect(makespan(plan, new Map([['a1', 100], ['a2', 100], ['a3', 50], ['a4', 2], ['a5', 2]]), 3, 0)).toBe(100);
    expect(plan[0]!.atoms[0]!.expectedTime).toBe(100);
  });

  it('keeps atomizer order inside a subjob', () => {
    const history = new Map([[key('first'), 0.002], [key('second'), 0.001], [key('third'), 0.003]]);
    expect(names(groupAtoms(['first', 'second', 'third'].map(atom), history, { executors: 2 }))).toEqual([['first', 'second', 'third']]);
  });

  it('groups very short atoms so the per-subjob cost stays small', () => {
    const atoms = Array.from({ length: 400 }, (_, i) => atom(`t${i}`));
    const history = new Map(atoms.map((a) => [key(a.value), 0.01]));
    const plan = groupAtoms(atoms, history, { executors: 4 });
    invariants(plan, 400);
    // 4 s of work for 4 executors: a handful of subjobs, not 400.
    expect(plan.length).toBeLessThanOrEqual(12);
  });

  it('ends 1000 atoms of 0.5–1.5 s on 25 executors within 3% of perfect (Develocity\'s case)', () => {
    const next = random(42);
    const truth = new Map(Array.from({ length: 1000 }, (_, i) => [`a${i}`, 0.5 + next()] as const));
    const atoms = [...truth.keys()].map(atom);
    const plan = groupAtoms(atoms, new Map([...truth].map(([value, seconds]) => [key(value), seconds])), { executors: 25 });
    invariants(plan, 1000);
    const serial = [...truth.values()].reduce((sum, s) => sum + s, 0);
    expect(serial / (25 * makespan(plan, truth, 25))).toBeGreaterThanOrEqual(0.97);
  });

  it('ends a skewed build within 5% of the lower bound, and better than without history', () => {
    const truth = new Map<string, number>();
    for (let i = 0; i < 190; i++) truth.set(`short${i}`, 0.2);
    for (let i = 0; i < 15; i++) truth.set(`long${i}`, 8);
    const atoms = [...truth.keys()].map(atom);
    const withHistory = groupAtoms(atoms, new Map([...truth].map(([value, seconds]) => [key(value), seconds])), { executors: 10 });
    invariants(withHistory, 205);
    const serial = 190 * 0.2 + 15 * 8;
    const bound = Math.max(8, serial / 10);
    const planned = makespan(withHistory, truth, 10);
    expect(planned).toBeLessThanOrEqual(1.05 * bound);
    expect(makespan(groupAtoms(atoms), truth, 10)).toBeGreaterThan(planned);
  });

  it('keeps short atoms in atomizer order whatever their times, so artifact_0_0 stays the first atom across builds', () => {
    // Times that jitter between builds, all short enough to be packed: the first atom leads the first subjob.
    for (const times of [[0.31, 0.36, 0.3], [0.3, 0.29, 0.45], [0.4, 0.1, 0.2]]) {
      const history = new Map(['n1', 'n2', 'n3'].map((value, index) => [key(value), times[index]!]));
      const plan = groupAtoms(['n1', 'n2', 'n3'].map(atom), history, { executors: 2 });
      invariants(plan, 3);
      expect(plan[0]!.atoms[0]!.value).toBe('n1');
    }
    // An atom long enough to matter still goes first.
    const history = new Map([[key('n1'), 0.2], [key('n2'), 3], [key('n3'), 0.2]]);
    expect(groupAtoms(['n1', 'n2', 'n3'].map(atom), history, { executors: 2 })[0]!.atoms[0]!.value).toBe('n2');
  });

  it('estimates atoms it has never seen with the median of the job', () => {
    const history = new Map([[key('a'), 1], [key('b'), 3], [key('c'), 10]]);
    const plan = groupAtoms(['a', 'b', 'c', 'new'].map(atom), history, { executors: 2, minSubjobS: 0 });
    invariants(plan, 4);
    const expected = new Map(plan.flatMap((subjob) => subjob.atoms.map((a) => [a.value, a.expectedTime] as const)));
    expect(expected.get('new')).toBe(3);
  });

  it('copes with one executor and with more executors than atoms', () => {
    const history = new Map([[key('a'), 5], [key('b'), 4], [key('c'), 0.1], [key('d'), 0.1]]);
    const atoms = ['a', 'b', 'c', 'd'].map(atom);
    const single = groupAtoms(atoms, history, { executors: 1 });
    invariants(single, 4);
    expect(names(single)[0]).toEqual(['a']);
    const many = groupAtoms(atoms, history, { executors: 64 });
    invariants(many, 4);
    expect(names(many)).toEqual([['a'], ['b'], ['c', 'd']]);
  });

  // Only correctness is asserted: how fast the plan is made is the overhead bench's to measure, not a test's.
  it('plans 100,000 atoms with history: every atom in exactly one subjob, ids in order', () => {
    const atoms = Array.from({ length: 100_000 }, (_, i) => atom(`x${i}`));
    const history = new Map(atoms.map((a, i) => [key(a.value), (i % 97) / 10]));
    const plan = groupAtoms(atoms, history, { executors: 200 });
    invariants(plan, 100_000);
  });

  it('keeps subjobs bounded when history says the atoms take no time at all', () => {
    const atoms = Array.from({ length: 10_000 }, (_, i) => atom(`x${i}`));
    const history = new Map(atoms.map((a) => [key(a.value), 0]));
    const plan = groupAtoms(atoms, history, { executors: 8 });
    invariants(plan, 10_000);
    expect(plan).toHaveLength(10_000 / MAX_ATOMS_PER_SUBJOB);
    expect(Math.max(...plan.map((subjob) => subjob.atoms.length))).toBe(MAX_ATOMS_PER_SUBJOB);
  });

  it('keeps a subjob of big atom values within a message a worker accepts', () => {
    const atoms = Array.from({ length: 10 }, (_, i) => ({ variable: 'X', value: `${i}`.padEnd(300_000, 'x') }));
    const history = new Map(atoms.map((a) => [key(a.value), 0.01]));
    const plan = groupAtoms(atoms, history, { executors: 1 });
    invariants(plan, 10);
    expect(plan.length).toBeLessThan(10);
    for (const subjob of plan) expect(subjob.atoms.reduce((sum, a) => sum + a.value.length, 0)).toBeLessThanOrEqual(1024 * 1024);
  });
});
