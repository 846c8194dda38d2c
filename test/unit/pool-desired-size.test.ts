import { describe, expect, it } from 'vitest';
import { desiredSizes, type PoolSizing } from '../../master/pools/desired-size.ts';

const pool = (name: string, min: number, max: number, executors = 1, labels: string[] = []): PoolSizing =>
  ({ name, minWorkers: min, maxWorkers: max, executorsPerWorker: executors, labels });

describe('desiredSizes', () => {
  it('is the minimum without work, and grows with the executors work can use, up to the maximum', () => {
    expect(desiredSizes([pool('p', 0, 4)], [], [])).toEqual(new Map([['p', 0]]));
    expect(desiredSizes([pool('p', 1, 4)], [], [])).toEqual(new Map([['p', 1]]));
    expect(desiredSizes([pool('p', 0, 4, 2)], [{ executors: 3, requires: [] }], [])).toEqual(new Map([['p', 2]]));
    expect(desiredSizes([pool('p', 0, 4, 2)], [{ executors: 50, requires: [] }], [])).toEqual(new Map([['p', 4]]));
  });

  it('counts the minimum and workers outside the pools before growing', () => {
    const others = [{ executors: 2, labels: new Set<string>() }];
    expect(desiredSizes([pool('p', 1, 4)], [{ executors: 4, requires: [] }], others)).toEqual(new Map([['p', 2]]));
  });

  it('gives labelled work only to pools carrying every label, in conf order', () => {
    const pools = [pool('plain', 0, 4), pool('gpu', 0, 4, 1, ['gpu', 'linux'])];
    expect(desiredSizes(pools, [{ executors: 3, requires: ['gpu'] }], [])).toEqual(new Map([['plain', 0], ['gpu', 3]]));
    expect(desiredSizes(pools, [{ executors: 2, requires: [] }, { executors: 1, requires: ['gpu'] }], [])).toEqual(new Map([['plain', 2], ['gpu', 1]]));
    // A labelled worker outside the pools serves labelled work; an unlabelled one does not.
    expect(desiredSizes(pools, [{ executors: 1, requires: ['gpu'] }], [{ executors: 4, labels: new Set() }])).toEqual(new Map([['plain', 0], ['gpu', 1]]));
    expect(desiredSizes(pools, [{ executors: 1, requires: ['gpu'] }], [{ executors: 4, labels: new Set(['gpu']) }])).toEqual(new Map([['plain', 0], ['gpu', 0]]));
  });

  it('spills over to the next pool once the first is at its maximum', () => {
    expect(desiredSizes([pool('a', 0, 2), pool('b', 0, 3)], [{ executors: 4, requires: [] }], [])).toEqual(new Map([['a', 2], ['b', 2]]));
  });
});
