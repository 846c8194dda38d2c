import { describe, expect, it } from 'vitest';
import { BUILD_STATUSES, buildDetails, canMove, isRetryMove, isTerminal, statusesMovingTo } from '../../master/model/build-status.ts';

describe('build lifecycle', () => {
  it('moves forward only along SPEC §5', () => {
    expect(canMove('QUEUED', 'PREPARING')).toBe(true);
    expect(canMove('PREPARING', 'BUILDING')).toBe(true);
    expect(canMove('PREPARING', 'SUCCESS')).toBe(true);
    expect(canMove('BUILDING', 'FAILURE')).toBe(true);
    expect(canMove('QUEUED', 'BUILDING')).toBe(false);
    expect(canMove('BUILDING', 'PREPARING')).toBe(false);
    expect(canMove('SUCCESS', 'FAILURE')).toBe(false);
  });

  it('lets cancel and error end any unfinished build', () => {
    for (const from of ['QUEUED', 'PREPARING', 'BUILDING'] as const) {
      expect(canMove(from, 'CANCELED')).toBe(true);
      expect(canMove(from, 'ERROR')).toBe(true);
    }
  });

  it('has exactly four terminal statuses whose one way out is a retry, back to BUILDING (SPEC §10)', () => {
    const terminal = BUILD_STATUSES.filter(isTerminal);
    expect(terminal).toEqual(['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED']);
    for (const from of terminal) for (const to of BUILD_STATUSES) expect(canMove(from, to)).toBe(to === 'BUILDING');
    for (const from of terminal) expect(isRetryMove(from, 'BUILDING')).toBe(true);
    // The ordinary writers' SQL guard leaves the retry edge out.
    expect(statusesMovingTo('BUILDING')).toEqual(['PREPARING']);
  });
});

describe('details text', () => {
  it.each([
    [534, 637, '534 of 637 subjobs are complete (83.8%).'],
    [0, 5, '0 of 5 subjobs are complete (0.0%).'],
    [5, 5, '5 of 5 subjobs are complete (100.0%).'],
    [1, 3, '1 of 3 subjobs are complete (33.3%).'],
  ])('%i of %i', (done, total, text) => {
    expect(buildDetails(done, total)).toBe(text);
  });

  it('is null without subjobs', () => {
    expect(buildDetails(0, 0)).toBeNull();
  });
});
