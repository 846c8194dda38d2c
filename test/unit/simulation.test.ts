import { describe, expect, it } from 'vitest';
import { simulateByPasses, simulateDispatch, type SimulatedSubjob } from '../../master/estimates/simulation.ts';

/** A small seeded generator: the same builds on every run. */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

describe('simulateDispatch on one worker (the running build\'s ETA)', () => {
  it('gives what the dispatcher\'s passes give, on random builds and executor counts', () => {
    const random = generator(20261208);
    for (let trial = 0; trial < 300; trial++) {
      const subjobs: SimulatedSubjob[] = Array.from({ length: 1 + Math.floor(random() * 120) }, (_, id) =>
        ({ id, seconds: random() < 0.1 ? 0 : random() * 20, numAtoms: 1 + Math.floor(random() * 30) }));
      const executors = Math.floor(random() * 40);
      const maxExecutors = random() < 0.3 ? Math.floor(random() * 50) : null;
      const costs = { setupS: random(), subjobS: random() * 0.05, atomS: random() * 0.01, lastSubjobS: random() * 0.02 };
      for (const maxExecutorsPerWorker of [null, executors]) {
        const layout = { executors, maxExecutors, maxExecutorsPerWorker };
        expect(simulateDispatch(subjobs, layout, costs), JSON.stringify({ trial, layout })).toBe(simulateByPasses(subjobs, layout, costs));
      }
    }
  });

  it('takes subjobs in their order, each on the executor that frees first', () => {
    const subjobs = [{ id: 0, seconds: 5, numAtoms: 1 }, { id: 1, seconds: 1, numAtoms: 1 }, { id: 2, seconds: 1, numAtoms: 1 }, { id: 3, seconds: 3, numAtoms: 1 }];
    const costs = { setupS: 0, subjobS: 0, atomS: 0, lastSubjobS: 0 };
    // Two executors: 0 runs 0-5; the other runs 1 (0-1), 2 (1-2), 3 (2-5).
    expect(simulateDispatch(subjobs, { executors: 2, maxExecutors: null, maxExecutorsPerWorker: null }, costs)).toBe(5);
    expect(simulateDispatch(subjobs, { executors: 2, maxExecutors: 1, maxExecutorsPerWorker: null }, costs)).toBe(10);
    expect(simulateDispatch(subjobs, { executors: 0, maxExecutors: null, maxExecutorsPerWorker: null }, { ...costs, setupS: 2 })).toBe(2);
  });
});
