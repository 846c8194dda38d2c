/** A binary min-heap of numbers: the lowest in O(log n), not a sort per take. */
export class NumberHeap {
  readonly #items: number[] = [];

  get size(): number {
    return this.#items.length;
  }

  /** The values, in heap order. */
  values(): readonly number[] {
    return this.#items;
  }

  clear(): void {
    this.#items.length = 0;
  }

  push(value: number): void {
    const heap = this.#items;
    let at = heap.push(value) - 1;
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (heap[parent]! <= value) break;
      heap[at] = heap[parent]!;
      at = parent;
    }
    heap[at] = value;
  }

  /** Takes the lowest; undefined when empty. */
  pop(): number | undefined {
    const heap = this.#items;
    if (heap.length === 0) return undefined;
    const lowest = heap[0]!;
    const last = heap.pop()!;
    if (heap.length === 0) return lowest;
    let at = 0;
    for (;;) {
      const left = at * 2 + 1;
      if (left >= heap.length) break;
      const child = left + 1 < heap.length && heap[left + 1]! < heap[left]! ? left + 1 : left;
      if (heap[child]! >= last) break;
      heap[at] = heap[child]!;
      at = child;
    }
    heap[at] = last;
    return lowest;
  }
}
