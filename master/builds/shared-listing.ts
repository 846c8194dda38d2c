/** Entries every consumer had are dropped this many at a time: past maxAhead, at most this many more are held. */
const TRIM_EVERY = 64;

/**
 * One listing read by several consumers (the build's tar.gz and zip writers): each entry is read once and
 * handed to every consumer, and the consumer ahead waits once it is `maxAhead` entries past the slowest, so
 * the listing is never held whole. Reading the folders was most of what writing both archives cost (issue 18).
 *
 * A consumer that stops early (its writer failed or was aborted) no longer holds the others back. An error
 * from the listing reaches every consumer when it gets there.
 */
export function shareListing<T>(source: AsyncIterable<T>, consumers: number, maxAhead: number): AsyncIterable<T>[] {
  // At 0 a consumer level with the others would wait for them to move, and they for it.
  if (!Number.isInteger(maxAhead) || maxAhead < 1) throw new RangeError(`maxAhead: expected an integer of at least 1, got ${maxAhead}`);
  const iterator = source[Symbol.asyncIterator]();
  // Entries from `base` on that some consumer may not have had yet (from `head` in `held`); positions count
  // from the listing's start. Entries every consumer had are dropped in batches: a splice per entry showed.
  let held: T[] = [];
  let head = 0;
  let base = 0;
  const positions = Array.from({ length: consumers }, () => 0);
  const stopped = Array.from({ length: consumers }, () => false);
  let end: { error: unknown } | 'done' | null = null;
  let pulling: Promise<void> | null = null;
  let wake: (() => void) | null = null;
  let slowestMoved: Promise<void> | null = null;

  const slowest = () => {
    let lowest = Number.POSITIVE_INFINITY;
    for (let index = 0; index < consumers; index++) if (!stopped[index] && positions[index]! < lowest) lowest = positions[index]!;
    return lowest;
  };
  const heldCount = () => held.length - head;
  const release = () => {
    const drop = Math.min(slowest(), base + heldCount()) - base;
    if (drop > 0) {
      head += drop;
      base += drop;
      if (head >= TRIM_EVERY || head === held.length) {
        held = held.slice(head);
        head = 0;
      }
    }
    wake?.();
    wake = null;
    slowestMoved = null;
  };
  const pull = () => {
    pulling ??= (async () => {
      try {
        const next = await iterator.next();
        if (next.done === true) end = 'done';
        else held.push(next.value);
      } catch (error) {
        end = { error };
      } finally {
        pulling = null;
      }
    })();
    return pulling;
  };

  const consumer = (index: number): AsyncIterable<T> => ({
    [Symbol.asyncIterator]: () => ({
      async next(): Promise<IteratorResult<T>> {
        for (;;) {
          if (stopped[index]) return { done: true, value: undefined };
          const at = positions[index]!;
          if (at < base + heldCount()) {
            const value = held[head + at - base]!;
            positions[index] = at + 1;
            release();
            return { done: false, value };
          }
          if (end === 'done') return { done: true, value: undefined };
          if (end !== null) throw end.error;
          if (at - slowest() >= maxAhead) {
            slowestMoved ??= new Promise<void>((resolve) => (wake = resolve));
            await slowestMoved;
          } else {
            await pull();
          }
        }
      },
      async return(): Promise<IteratorResult<T>> {
        stopped[index] = true;
        release();
        // The listing is closed once no consumer wants more of it.
        if (stopped.every(Boolean)) await iterator.return?.();
        return { done: true, value: undefined };
      },
    }),
  });
  return Array.from({ length: consumers }, (_, index) => consumer(index));
}
