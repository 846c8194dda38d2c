/**
 * Security suite, issue 10 item 13: signed requests are accepted once, across a restart of the master, and
 * a full nonce cache never locks anyone out.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { NonceCache, NONCE_KEEP_MS, signRequest } from '../../shared/auth.ts';
import { join } from 'node:path';
import { openDatabase } from '../../master/store/database.ts';
import { createNonceStore } from '../../master/store/nonce-store.ts';
import { api, cleanupAll, startTestMaster, tempDir } from '../support/cluster.ts';

afterEach(cleanupAll);

const JOB = { commands: ['true'], atomizers: [{ X: 'echo 1' }] };

describe('replayed signed requests', () => {
  it('a signed POST replayed after a master restart is refused, and no second build is made', async () => {
    const first = await startTestMaster();
    const body = JSON.stringify({ type: 'directory', project_directory: tempDir(), config: JOB });
    const headers = { ...signRequest(first.secret, 'POST', '/v1/build', body), 'content-type': 'application/json' };
    const created = await fetch(`${first.url}/v1/build`, { method: 'POST', body, headers });
    expect(created.status).toBe(202);
    await first.close();

    const second = await startTestMaster({ base: first.base, secret: first.secret });
    const replayed = await fetch(`${second.url}/v1/build`, { method: 'POST', body, headers });
    expect(replayed.status).toBe(401);
    expect(JSON.stringify(await replayed.json())).toContain('already received');
    const list = await api(second, 'GET', '/v1/build');
    expect(list.body.builds).toHaveLength(1);
  });

  it('the in-memory cache evicts its oldest entry when full instead of refusing every new nonce', () => {
    const cache = new NonceCache(3);
    const now = 1_000_000;
    for (const nonce of ['a', 'b', 'c', 'd', 'e']) expect(cache.remember(nonce, now)).toBe(true);
    expect(cache.size).toBe(3);
    expect(cache.remember('e', now)).toBe(false);
    // Entries leave by age as well.
    expect(cache.remember('f', now + NONCE_KEEP_MS + 1)).toBe(true);
    expect(cache.size).toBe(1);
  });

  it('the SQLite book refuses a nonce its memory front has already evicted, and forgets it only after its window', () => {
    const book = createNonceStore(openDatabase(join(tempDir(), 'nonces.db')), { memoryEntries: 2 });
    const now = 5_000_000;
    for (const nonce of ['a', 'b', 'c', 'd']) expect(book.remember(nonce, now)).toBe(true);
    expect(book.remember('a', now + 1)).toBe(false);
    expect(book.remember('a', now + NONCE_KEEP_MS + 20_000)).toBe(true);
  });
});
