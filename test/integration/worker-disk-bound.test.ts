import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConf } from '../../shared/conf.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { WorkerDaemon } from '../../worker/daemon.ts';
import { cleanupAll, tempDir, writeConf } from '../support/cluster.ts';
import { freePort } from '../support/build-results.ts';

afterEach(cleanupAll);

describe('a worker daemon bounds its disk', () => {
  it('removes an old repository cache past max_workspace_bytes as it starts, and keeps a recent one', async () => {
    const base = tempDir('cr-worker-disk-');
    const cache = (name: string) => join(base, 'git-cache', name);
    for (const name of ['old', 'recent']) {
      mkdirSync(cache(name), { recursive: true });
      writeFileSync(join(cache(name), 'pack'), Buffer.alloc(100_000, 1));
    }
    const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
    utimesSync(cache('old'), twoDaysAgo, twoDaysAgo);
    const file = writeConf(base, 'worker', {
      general: { secret: 'disk-bound-secret', base_directory: base },
      worker: { max_workspace_bytes: 1024 },
    });
    // No master answers: the disk bound does not wait for one.
    const daemon = new WorkerDaemon({
      ...loadConf({ file, role: 'worker', env: {} }),
      masterUrl: `http://127.0.0.1:${await freePort()}`,
      name: 'disk-bound-worker',
      log: createSilentLogger(),
    });
    await daemon.start();
    try {
      await expect.poll(() => existsSync(cache('old')), { timeout: 20_000 }).toBe(false);
      expect(existsSync(join(cache('recent'), 'pack'))).toBe(true);
    } finally {
      daemon.stopNow();
      await daemon.exited;
    }
  }, 60_000);
});
