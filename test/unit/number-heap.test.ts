import { expect, it } from 'vitest';
import { NumberHeap } from '../../master/model/number-heap.ts';

it('gives the lowest first through any mix of pushes and takes, duplicates included', () => {
  const heap = new NumberHeap();
  const mirror: number[] = [];
  let state = 7;
  const next = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) % 50;
  for (let step = 0; step < 2000; step++) {
    if (next() % 3 === 0 && mirror.length > 0) {
      mirror.sort((a, b) => a - b);
      expect(heap.pop()).toBe(mirror.shift());
    } else {
      const value = next();
      heap.push(value);
      mirror.push(value);
    }
    expect(heap.size).toBe(mirror.length);
  }
  expect([...heap.values()].sort((a, b) => a - b)).toEqual(mirror.sort((a, b) => a - b));
  heap.clear();
  expect(heap.pop()).toBeUndefined();
});
