import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createResultsLayout } from '../../master/builds/results-layout.ts';

describe('the results layout', () => {
  it("puts an atom's folder under its own build's artifacts, whichever build was asked for last", () => {
    for (const root of ['/srv/cr/results', '/srv/cr/results/', 'relative/results', './results/../results']) {
      const layout = createResultsLayout(root);
      for (const [buildId, subjobId, atomId] of [[1, 0, 0], [1, 12, 3], [2, 0, 1], [1, 5, 0], [10, 2, 2]] as const) {
        expect(layout.atomDir(buildId, subjobId, atomId)).toBe(join(root, String(buildId), 'artifacts', `artifact_${subjobId}_${atomId}`));
        expect(layout.artifactsDir(buildId)).toBe(join(root, String(buildId), 'artifacts'));
      }
    }
  });
});
