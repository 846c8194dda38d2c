/**
 * The stream's BUILD_STATUS events follow from the log (master/events/build-status-events.ts), and a replay
 * asks SQLite only for STATUS_CHANGING_TAGS to derive them: the list and statusAfter must name the same tags.
 */
import { describe, expect, it } from 'vitest';
import { STATUS_CHANGING_TAGS, statusAfter } from '../../master/events/build-status-events.ts';
import { EVENT_TAGS } from '../../master/store/event-store.ts';

describe('build status events', () => {
  it('moves a build\'s status on exactly the tags a replay reads for BUILD_STATUS', () => {
    const moving = EVENT_TAGS.filter((tag) => statusAfter({ __id__: 1, __tag__: tag, __timestamp__: 0, build_id: 1, status: 'SUCCESS' }) !== null);
    expect(new Set(moving)).toEqual(new Set(STATUS_CHANGING_TAGS));
  });
});
