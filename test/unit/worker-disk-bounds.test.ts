import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GitCache } from '../../shared/git.ts';
import { createSilentLogger } from '../../shared/log.ts';
import { WorkerDiskBound, type BuildInUse } from '../../worker/disk-bounds.ts';
import { cleanupAll, tempDir } from '../support/cluster.ts';
import { createRepo } from '../support/git-repo.ts';
import { folderBytes } from '../../shared/folder-size.ts';
import { registerMessage } from '../../shared/protocol.ts';

afterEach(cleanupAll);

const MINUTE_MS = 60_000;

/** Sets a folder's (and its git markers') last use to `agoMs` before now. */
function lastUsed(path: string, agoMs: number): void {
  const when = new Date(Date.now() - agoMs);
  for (const file of [path, join(path, 'FETCH_HEAD'), join(path, 'HEAD')]) if (existsSync(file)) utimesSync(file, when, when);
}

async function setUp() {
  const base = tempDir('cr-disk-bound-');
  const workDir = join(base, 'worker', `${process.pid}-0123abcd`);
  const git = new GitCache({ root: join(base, 'git-cache'), timeoutMs: 60_000, allowLocalRepositories: true });
  // Two real repository caches, fetched as a worker fetches them.
  const repos = [createRepo({ 'a.txt': 'a'.repeat(50_000) }), createRepo({ 'b.txt': 'b'.repeat(50_000) })];
  const sources = repos.map((repo) => ({ url: repo.dir, branch: 'master', hash: null, remote: 'origin' }));
  for (const source of sources) await git.fetch(source);
  // Three build workspaces left behind by builds the master never tore down.
  for (const id of [1, 2, 3]) {
    mkdirSync(join(workDir, 'projects', String(id)), { recursive: true });
    writeFileSync(join(workDir, 'projects', String(id), 'output.bin'), Buffer.alloc(100_000, id));
  }
  return { base, workDir, git, sources };
}

describe('WorkerDiskBound', () => {
  it('removes the least recently used workspaces and caches past max_workspace_bytes, never one in use or used lately', async () => {
    const { base, workDir, git, sources } = await setUp();
    const workspace = (id: number) => join(workDir, 'projects', String(id));
    const mirrorA = git.mirrorPath(sources[0]!.url);
    const mirrorB = git.mirrorPath(sources[1]!.url);
    // Oldest first: workspace 1 (in use), mirror A (in use through build 1), workspace 2, mirror B, workspace 3 (just now).
    lastUsed(workspace(1), 600 * MINUTE_MS);
    lastUsed(mirrorA, 500 * MINUTE_MS);
    lastUsed(workspace(2), 400 * MINUTE_MS);
    lastUsed(mirrorB, 300 * MINUTE_MS);
    lastUsed(workspace(3), 1 * MINUTE_MS);
    const sizes = new Map(await Promise.all([workspace(1), workspace(2), workspace(3), mirrorA, mirrorB].map(async (path) => [path, await folderBytes(path)] as const)));
    const inUse: BuildInUse[] = [{ build_id: 1, project: { type: 'git', url: sources[0]!.url } }];

    // Room for what is in use, the recent workspace and one more: workspace 2 (older than mirror B) goes.
    const bound = sizes.get(workspace(1))! + sizes.get(mirrorA)! + sizes.get(workspace(3))! + sizes.get(mirrorB)! + 1000;
    const diskBound = new WorkerDiskBound({
      workDir, gitCacheRoot: join(base, 'git-cache'), diskPath: base, maxBytes: bound, minFreeBytes: 0,
      buildsInUse: () => inUse, mirrorPath: (url) => git.mirrorPath(url), log: createSilentLogger(),
    });
    const first = await diskBound.runPass();
    expect(first.removed).toEqual([workspace(2)]);
    expect(first.state).toBe('ok');
    expect(first.keptBytes).toBeLessThanOrEqual(bound);

    // A bound of one byte: everything not in use and not recent goes, oldest first; the rest stays.
    const tight = new WorkerDiskBound({
      workDir, gitCacheRoot: join(base, 'git-cache'), diskPath: base, maxBytes: 1, minFreeBytes: 0,
      buildsInUse: () => inUse, mirrorPath: (url) => git.mirrorPath(url), log: createSilentLogger(),
    });
    expect((await tight.runPass()).removed).toEqual([mirrorB]);
    for (const kept of [workspace(1), mirrorA, workspace(3)]) expect(existsSync(kept)).toBe(true);
    // The cache in use still serves a fetch.
    expect(await git.fetch(sources[0]!)).toMatch(/^[0-9a-f]{40}$/);
  }, 60_000);

  it('reports disk pressure as a state when free space stays below min_disk_free_bytes, and recovers', async () => {
    const { base, workDir, git } = await setUp();
    lastUsed(join(workDir, 'projects', '2'), 60 * MINUTE_MS);
    let minFreeBytes = Number.MAX_SAFE_INTEGER;
    const make = () => new WorkerDiskBound({
      workDir, gitCacheRoot: join(base, 'git-cache'), diskPath: base, maxBytes: 1e12, minFreeBytes,
      buildsInUse: () => [], mirrorPath: (url) => git.mirrorPath(url), log: createSilentLogger(),
    });
    const pressed = await make().runPass();
    expect(pressed.state).toBe('disk_pressure');
    expect(pressed.freeBytes).toBeGreaterThan(0);
    // Short of space, it frees what it may (the old workspace), though the bound itself is far away.
    expect(pressed.removed).toEqual([join(workDir, 'projects', '2')]);

    minFreeBytes = 0;
    const relieved = make();
    expect((await relieved.runPass()).state).toBe('ok');
    expect(relieved.state).toBe('ok');
    relieved.start();
    await Promise.all([relieved.close(), relieved.close()]);
  }, 60_000);
});

describe('the disk state on registration', () => {
  const register = {
    type: 'register', protocol_version: 2, name: 'w', num_executors: 1, session_id: 's', heartbeat_interval_ms: 1000,
    heartbeat_failure_threshold: 3, resume: null, proof: 'a'.repeat(64),
  };

  it('is optional, and when sent is checked field by field', () => {
    expect(registerMessage.safeParse(register).success).toBe(true);
    expect(registerMessage.safeParse({ ...register, disk: { state: 'disk_pressure', free_bytes: 1024 } }).success).toBe(true);
    expect(registerMessage.safeParse({ ...register, disk: { state: 'ok', free_bytes: null } }).success).toBe(true);
    const bad = registerMessage.safeParse({ ...register, disk: { state: 'full', free_bytes: -1 } });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues.map((issue) => issue.path.join('.'))).toEqual(['disk.state', 'disk.free_bytes']);
  });
});
