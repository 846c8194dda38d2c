import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { shareListing } from '../../master/builds/shared-listing.ts';

/** A listing of 0..count-1 that counts how often it was read and whether it was closed. */
function countingListing(count: number, failAt: number | null = null) {
  const seen = { reads: 0, closed: false };
  async function* listing(): AsyncGenerator<number> {
    try {
      for (let value = 0; value < count; value++) {
        seen.reads++;
        await sleep(0);
        if (value === failAt) throw new Error(`listing failed at ${value}`);
        yield value;
      }
    } finally {
      seen.closed = true;
    }
  }
  return { listing: listing(), seen };
}

async function collect(iterable: AsyncIterable<number>, delayMs = 0): Promise<number[]> {
  const values: number[] = [];
  for await (const value of iterable) {
    values.push(value);
    if (delayMs > 0) await sleep(delayMs);
  }
  return values;
}

/** Resolves to 'pending' when the promise has not settled within a few turns. */
async function settlesSoon<T>(promise: Promise<T>): Promise<T | 'pending'> {
  return Promise.race([promise, sleep(30).then(() => 'pending' as const)]);
}

describe('shareListing', () => {
  it('hands every entry to every consumer in order, reading the listing once', async () => {
    const { listing, seen } = countingListing(500);
    const [fast, slow] = shareListing(listing, 2, 16);

    const [fromFast, fromSlow] = await Promise.all([collect(fast!), collect(slow!, 1)]);

    const all = Array.from({ length: 500 }, (_, index) => index);
    expect(fromFast).toEqual(all);
    expect(fromSlow).toEqual(all);
    expect(seen.reads).toBe(500);
  });

  it('holds the consumer ahead once it is maxAhead entries past the other', async () => {
    const { listing } = countingListing(100);
    const [ahead, behind] = shareListing(listing, 2, 4);
    const aheadIterator = ahead![Symbol.asyncIterator]();
    const behindIterator = behind![Symbol.asyncIterator]();

    for (let expected = 0; expected < 4; expected++) expect((await aheadIterator.next()).value).toBe(expected);
    const fifth = aheadIterator.next();
    expect(await settlesSoon(fifth)).toBe('pending');

    expect((await behindIterator.next()).value).toBe(0);
    expect(await settlesSoon(fifth)).toEqual({ done: false, value: 4 });
  });

  it('lets the others go on when a consumer stops early, and closes the listing once all have', async () => {
    const { listing, seen } = countingListing(100);
    const [stopsEarly, goesOn] = shareListing(listing, 2, 4);
    const stopping = stopsEarly![Symbol.asyncIterator]();
    expect((await stopping.next()).value).toBe(0);
    await stopping.return!();

    expect(await collect(goesOn!)).toHaveLength(100);
    expect(seen.closed).toBe(true);

    const second = countingListing(100);
    const [first, other] = shareListing(second.listing, 2, 4);
    for (const consumer of [first!, other!]) {
      const iterator = consumer[Symbol.asyncIterator]();
      await iterator.next();
      await iterator.return!();
    }
    expect(second.seen.closed).toBe(true);
    expect(second.seen.reads).toBeLessThan(100);
  });

  it('gives the listing\'s error to every consumer that reaches it', async () => {
    const { listing } = countingListing(100, 10);
    const [one, two] = shareListing(listing, 2, 4);

    const results = await Promise.allSettled([collect(one!), collect(two!, 1)]);

    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect(String((result as PromiseRejectedResult).reason)).toContain('listing failed at 10');
    }
  });

  it('refuses a maxAhead below 1, with which consumers level with each other would wait for ever', () => {
    expect(() => shareListing(countingListing(3).listing, 2, 0)).toThrow(/maxAhead: expected an integer of at least 1/);
  });
});
